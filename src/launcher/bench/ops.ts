/**
 * The collectives `ringrun bench --op` measures, with nccl-tests' conventions (its
 * doc/PERFORMANCE.md). For each op, the row's size is:
 *   allreduce      the array reduced                       busbw = algbw x 2(N-1)/N
 *   reducescatter  the input (each rank keeps size/N)      busbw = algbw x (N-1)/N
 *   allgather      the gathered output (size/N per rank)   busbw = algbw x (N-1)/N
 *   broadcast      the array rank 0 sends                  busbw = algbw
 *   alltoall       a rank's send buffer (size/N per peer)  busbw = algbw x (N-1)/N
 *   sendrecv       what rank r sends to r+1 (it receives as much from r-1 at once)  busbw = algbw
 * where algbw = size / time. Pure: the parser, the worker and the tests share it.
 */
export const BENCH_OPS = ['allreduce', 'allgather', 'broadcast', 'reducescatter', 'alltoall', 'sendrecv'] as const;
export type BenchOp = (typeof BENCH_OPS)[number];

export interface BenchOpInfo {
  /** For the table's title, like nccl-tests' binaries (all_reduce_perf -> all-reduce). */
  label: string;
  /** Takes --reduce (a reduction). */
  reduces: boolean;
  /** The size is split into N equal parts, so a row's element count is a multiple of N. */
  splitsByN: boolean;
  /** busbw / algbw at N ranks. */
  busFactor(n: number): number;
}

export const OP_INFO: Readonly<Record<BenchOp, BenchOpInfo>> = {
  allreduce: { label: 'all-reduce', reduces: true, splitsByN: false, busFactor: (n) => (2 * (n - 1)) / n },
  reducescatter: { label: 'reduce-scatter', reduces: true, splitsByN: true, busFactor: (n) => (n - 1) / n },
  allgather: { label: 'all-gather', reduces: false, splitsByN: true, busFactor: (n) => (n - 1) / n },
  broadcast: { label: 'broadcast', reduces: false, splitsByN: false, busFactor: () => 1 },
  alltoall: { label: 'all-to-all', reduces: false, splitsByN: true, busFactor: (n) => (n - 1) / n },
  sendrecv: { label: 'send-recv', reduces: false, splitsByN: false, busFactor: () => 1 },
};

/**
 * The byte sizes of the rows for `op` at N ranks: for ops that split the size into N parts, each
 * size rounds down to a multiple of N float32s (at least N of them), as nccl-tests rounds its
 * counts; sizes that become equal are measured once.
 */
export function rowSizes(op: BenchOp, sizes: readonly number[], n: number): number[] {
  const unit = OP_INFO[op].splitsByN ? 4 * n : 4;
  const out: number[] = [];
  for (const s of sizes) {
    const bytes = Math.max(unit, Math.floor(s / unit) * unit);
    if (out[out.length - 1] !== bytes) out.push(bytes);
  }
  return out;
}
