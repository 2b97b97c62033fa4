import { MAX_ELEMENTS, type DTypeInfo, type NumericArray } from '../dtypes.js';
import { RingInvalidArgError } from '../errors.js';
import type { Collective, OpContext, TableProblem } from './collective.js';
import { INLINE_BYTES, type OpDescriptor } from './descriptor.js';

/**
 * Inputs of at most this many bytes travel inside the descriptors, as the eager all-reduce's do
 * (capped so that a descriptor with its N splits still fits a frame of `chunkBytes`).
 */
export function inlineLimit(chunkBytes: number, size: number): number {
  return Math.min(INLINE_BYTES, chunkBytes - 4 * size);
}

/** Where a rank's block for each destination starts, from its splits. */
export function offsets(splits: ArrayLike<number>): number[] {
  const out = new Array<number>(splits.length);
  let at = 0;
  for (let j = 0; j < splits.length; j++) {
    out[j] = at;
    at += splits[j];
  }
  return out;
}

/**
 * All-to-all, first half: the agreement. Every rank's splits (and, for a small input, the input
 * itself) ride in its descriptor, which visits every rank anyway; once the table is complete each
 * rank knows how much every other sends it. The blocks themselves then go straight from rank to
 * rank over point-to-point links (see group.ts), so no byte is forwarded around the ring.
 */
export class AlltoallAgreement implements Collective<AlltoallPlan> {
  readonly needsTable = true;
  readonly frameless = true;
  received = false;
  private plan: AlltoallPlan | undefined;

  constructor(
    private readonly x: NumericArray,
    private readonly dtype: DTypeInfo,
    private readonly splits: Int32Array,
    private readonly rank: number,
    /** See inlineLimit(): every rank has the same. */
    private readonly limit: number,
  ) {}

  inline(): Uint8Array {
    const bytes = this.x.byteLength;
    const head = new Uint8Array(this.splits.buffer, this.splits.byteOffset, this.splits.byteLength);
    if (bytes > this.limit) return Buffer.from(head);
    const out = Buffer.allocUnsafe(head.byteLength + bytes);
    out.set(head, 0);
    out.set(new Uint8Array(this.x.buffer, this.x.byteOffset, bytes), head.byteLength);
    return out;
  }

  start(): void {}

  onTable(ctx: OpContext): TableProblem | undefined {
    const n = ctx.size;
    const from = new Array<number>(n);
    const inlined: (Uint8Array | undefined)[] = new Array(n);
    // What each rank receives in all: every rank checks every rank's, so all fail alike.
    const totals = new Array<number>(n).fill(0);
    for (let r = 0; r < n; r++) {
      const p = ctx.inline[r];
      const count = ctx.descriptors[r]!.count;
      if (!p || p.byteLength < 4 * n) return { rank: r, problem: `sent no splits with its all-to-all descriptor` };
      const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
      let sum = 0;
      for (let j = 0; j < n; j++) {
        const s = view.getInt32(4 * j, true);
        if (s < 0) return { rank: r, problem: `sent a negative split (${s})` };
        sum += s;
        totals[j] += s;
        if (j === this.rank) from[r] = s;
      }
      if (sum !== count) return { rank: r, problem: `sent splits summing to ${sum} for ${count} elements` };
      const data = p.byteLength - 4 * n;
      if (data !== 0 && data !== count * this.dtype.bytes) return { rank: r, problem: `sent ${data} inline bytes for ${count} elements` };
      // A rank's whole input is inline exactly when it is small (every rank applies the same rule).
      const small = count * this.dtype.bytes <= this.limit;
      if ((data !== 0) !== (small && count > 0)) return { rank: r, problem: `inlined ${data} bytes for ${count} elements` };
      if (data !== 0) {
        const copy = new Uint8Array(data);
        copy.set(p.subarray(4 * n));
        const block = new this.dtype.ctor(copy.buffer, 0, count);
        const at = offsets(Array.from({ length: n }, (_, j) => view.getInt32(4 * j, true)))[this.rank];
        inlined[r] = new Uint8Array(block.buffer, at * this.dtype.bytes, from[r] * this.dtype.bytes);
      }
    }
    const over = totals.findIndex((t) => t > MAX_ELEMENTS);
    if (over >= 0) {
      throw new RingInvalidArgError(`rank ${ctx.rank}: alltoall: rank ${over} would receive ${totals[over]} elements, more than an array can hold (${MAX_ELEMENTS})`, {
        rank: ctx.rank,
        ranks: [over],
        op: 'alltoall',
        field: 'splits',
      });
    }
    this.plan = { from, inlined };
    this.received = true;
    return undefined;
  }

  onData(): string {
    return 'an all-to-all agreement carries no data frames';
  }

  result(): AlltoallPlan {
    return this.plan!;
  }
}

/** What the agreement tells a rank: how many elements each rank sends it, and those that came inline. */
export interface AlltoallPlan {
  from: number[];
  /** The block from rank r, when r's input was small enough to ride in its descriptor. */
  inlined: (Uint8Array | undefined)[];
}

/** What the all-to-all needs of its group: the agreement's ring, and point-to-point in its own context. */
export interface AlltoallPort {
  readonly rank: number;
  readonly size: number;
  readonly chunkBytes: number;
  agree(desc: OpDescriptor, coll: AlltoallAgreement): Promise<AlltoallPlan>;
  send(piece: NumericArray, dst: number, tag: number): Promise<void>;
  recv(into: NumericArray, src: number, tag: number): Promise<unknown>;
}

/**
 * The whole all-to-all: agree (and learn the sizes), then every block that did not ride inline
 * goes straight to its rank, all sends and recvs posted at once. `tag` is the same on every rank
 * for this call (the group's count of all-to-alls): concurrent ones cannot take each other's blocks.
 */
export async function runAlltoall<T extends NumericArray>(
  port: AlltoallPort,
  x: T,
  dtype: DTypeInfo,
  splits: Int32Array,
  desc: OpDescriptor,
  tag: number,
  /** options.into: the result's place, checked once the sizes are known. */
  into?: T,
): Promise<{ data: T; splits: number[] }> {
  const { rank, size } = port;
  const limit = inlineLimit(port.chunkBytes, size);
  const plan = await port.agree(desc, new AlltoallAgreement(x, dtype, splits, rank, limit));
  const total = plan.from.reduce((a, b) => a + b, 0);
  // A wrong-sized `into` is found only now: the exchange still runs (into a new array), so that no
  // other rank waits for this one's blocks, and then this rank alone fails.
  const fits = into !== undefined && into.length === total;
  const data = fits ? into : (new dtype.ctor(total) as T);
  const at = offsets(plan.from);
  const mine = offsets(splits);
  const meInline = x.byteLength <= limit;
  const moves: Promise<unknown>[] = [];
  for (let j = 0; j < size; j++) {
    const into = data.subarray(at[j], at[j] + plan.from[j]);
    const out = x.subarray(mine[j], mine[j] + splits[j]);
    if (j === rank) into.set(out as never);
    else {
      const came = plan.inlined[j];
      if (came) new Uint8Array(into.buffer, into.byteOffset, into.byteLength).set(came);
      else if (plan.from[j] > 0) moves.push(port.recv(into, j, tag));
      if (!meInline && splits[j] > 0) moves.push(port.send(out, j, tag));
    }
  }
  await Promise.all(moves);
  if (into !== undefined && !fits) {
    throw new RingInvalidArgError(`alltoall: options.into has ${into.length} elements, but ${total} arrive here (splits ${plan.from.join(',')})`, {
      rank,
      op: 'alltoall',
      field: 'into',
    });
  }
  return { data, splits: plan.from };
}
