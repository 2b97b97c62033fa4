import type { AllreduceOptions, BroadcastOptions, ReducescatterOptions } from '../../group.js';
import type { BenchConfig, ReduceName } from './args.js';
import type { BenchOp } from './ops.js';

/**
 * How `ringrun bench` runs and checks each op on one rank. With --check, every input is filled
 * with small integers before each timed operation (exact in float32, fp16 and bf16, and so are
 * their sums and products), every output buffer the op writes into is reset first, and `wrong()`
 * counts the elements of the last result that differ from the exact answer.
 *
 * Each rank's value at element i depends on i mod 8 (mod 16 for alltoall) and on ranks, so the
 * expected result is computed from the same small formulas.
 */
export interface OpRun {
  fill(): void;
  run(): Promise<void>;
  wrong(): number;
}

/** The collectives the bench calls: the process-wide API (the worker passes the module) or one RingGroup (tests). */
export interface BenchComm {
  allreduce(x: Float32Array, o: AllreduceOptions): Promise<Float32Array>;
  reducescatter(x: Float32Array, o: ReducescatterOptions): Promise<Float32Array>;
  allgather(x: Float32Array): Promise<Float32Array>;
  broadcast(x: Float32Array, o: BroadcastOptions): Promise<Float32Array>;
  alltoall(x: Float32Array, o?: { into?: Float32Array }): Promise<{ data: Float32Array; splits: number[] }>;
  send(x: Float32Array, o: { dst: number; tag?: number }): Promise<void>;
  recv(into: Float32Array, o: { src: number; tag?: number }): Promise<Float32Array>;
}

export interface RunContext {
  comm: BenchComm;
  config: BenchConfig;
  rank: number;
  size: number;
  /** Elements of the row's size (see ops.ts for what the size is per op). */
  count: number;
  /** Scratch of at least --max-bytes each: the input, and an output for recv. */
  input: Float32Array;
  output: Float32Array;
}

/** Rank r's value at element i, for the reductions. */
const value = (i: number, r: number, reduce: ReduceName) => (reduce === 'product' ? ((i + r) % 2) + 1 : (i * 3 + r) % 8);

/** The exact reduction over n ranks of value(i, r), for i mod 8. */
function reducedPattern(n: number, reduce: ReduceName): number[] {
  return Array.from({ length: 8 }, (_, i) => {
    const vals = Array.from({ length: n }, (_, r) => value(i, r, reduce));
    const sum = vals.reduce((a, b) => a + b, 0);
    switch (reduce) {
      case 'product':
        return vals.reduce((a, b) => a * b, 1);
      case 'sum':
        return sum;
      case 'average':
        return Math.fround(sum / n);
      case 'min':
        return Math.min(...vals);
      case 'max':
        return Math.max(...vals);
    }
  });
}

/** Elements of `v` that differ from `expect(i)`. */
function countWrong(v: Float32Array, expect: (i: number) => number): number {
  let wrong = 0;
  for (let i = 0; i < v.length; i++) if (v[i] !== expect(i)) wrong++;
  return wrong;
}

function fillWith(v: Float32Array, f: (i: number) => number): void {
  for (let i = 0; i < v.length; i++) v[i] = f(i);
}

const RUNNERS: Record<BenchOp, (ctx: RunContext) => OpRun> = {
  allreduce({ comm, config: c, rank, size, count, input }) {
    const x = input.subarray(0, count);
    const expect = reducedPattern(size, c.reduce);
    const options = { op: c.reduce, inPlace: true, ...(c.compression !== 'none' ? { compression: c.compression } : {}) } as AllreduceOptions;
    return {
      fill: () => fillWith(x, (i) => value(i, rank, c.reduce)),
      run: async () => void (await comm.allreduce(x, options)),
      wrong: () => countWrong(x, (i) => expect[i & 7]),
    };
  },

  reducescatter({ comm, config: c, rank, size, count, input }) {
    const x = input.subarray(0, count);
    const expect = reducedPattern(size, c.reduce);
    const offset = rank * (count / size);
    let out: Float32Array = new Float32Array(0);
    return {
      fill: () => fillWith(x, (i) => value(i, rank, c.reduce)),
      run: async () => void (out = await comm.reducescatter(x, { op: c.reduce })),
      wrong: () => countWrong(out, (j) => expect[(offset + j) & 7]) + Math.abs(out.length - count / size),
    };
  },

  allgather({ comm, rank, size, count, input }) {
    const part = count / size;
    const x = input.subarray(0, part);
    let out: Float32Array = new Float32Array(0);
    return {
      fill: () => fillWith(x, (j) => (j * 3 + rank) % 8),
      run: async () => void (out = await comm.allgather(x)),
      wrong: () => countWrong(out, (i) => ((i % part) * 3 + Math.floor(i / part)) % 8) + Math.abs(out.length - count),
    };
  },

  broadcast({ comm, rank, count, input }) {
    const x = input.subarray(0, count);
    let out: Float32Array = new Float32Array(0);
    // Only rank 0's data may arrive: the others hold a value rank 0 never sends.
    return {
      fill: () => fillWith(x, (i) => (rank === 0 ? (i * 3 + 5) % 8 : 99)),
      run: async () => void (out = await comm.broadcast(x, { root: 0 })),
      wrong: () => countWrong(out, (i) => (i * 3 + 5) % 8) + Math.abs(out.length - count),
    };
  },

  alltoall({ comm, rank, size, count, input, output }) {
    const part = count / size;
    const x = input.subarray(0, count);
    // Element k of the part that rank `src` sends to rank `dst`.
    const sent = (src: number, dst: number, k: number) => (k * 3 + src * 5 + dst) % 16;
    // Into a buffer kept across calls, as MPI_Alltoall's and Gloo's outputs are (see options.into).
    const into = output.subarray(0, count);
    let out: Float32Array = new Float32Array(0);
    return {
      fill: () => {
        fillWith(x, (i) => sent(rank, Math.floor(i / part), i % part));
        into.fill(-1);
      },
      run: async () => void (out = (await comm.alltoall(x, { into })).data),
      wrong: () => countWrong(out, (i) => sent(Math.floor(i / part), rank, i % part)) + Math.abs(out.length - count),
    };
  },

  sendrecv({ comm, rank, size, count, input, output }) {
    const x = input.subarray(0, count);
    const into = output.subarray(0, count);
    const next = (rank + 1) % size;
    const prev = (rank + size - 1) % size;
    return {
      fill: () => {
        fillWith(x, (i) => (i * 3 + rank) % 8);
        into.fill(-1);
      },
      run: async () => void (await Promise.all([comm.send(x, { dst: next }), comm.recv(into, { src: prev })])),
      wrong: () => countWrong(into, (i) => (i * 3 + prev) % 8),
    };
  },
};

export const prepareRun = (op: BenchOp, ctx: RunContext): OpRun => RUNNERS[op](ctx);
