import { bytesOf, type DTypeInfo, type NumericArray } from '../dtypes.js';
import { divideInPlace, reduceInto, type ReduceOp } from '../kernels/index.js';
import { viewAs, type Collective, type OpContext, type TableProblem } from './collective.js';
import { INLINE_BYTES } from './descriptor.js';

/**
 * Inputs up to this many bytes per rank ride inside the operation's descriptor (capped by
 * chunkBytes, so a descriptor always fits a link's maxPayload).
 *
 * Why: every collective already sends each rank's descriptor once around the ring (N-1 hops), so
 * a small all-reduce whose inputs travel with them needs no data frames at all — one message per
 * rank instead of a descriptor plus 2(N-1) frames, and half the hops on the critical path. On
 * loopback a system call and the wake-up of the peer cost tens of microseconds each, which is
 * what a small operation's time is made of. Above a few KiB the ring's 2(N-1)/N bytes per link
 * win over the N-1 copies this sends.
 */
export const EAGER_BYTES = INLINE_BYTES;

export function eagerFits(bytes: number, size: number, chunkBytes: number): boolean {
  return size > 1 && bytes <= Math.min(EAGER_BYTES, chunkBytes);
}

/**
 * All-reduce of a small input: each rank's input travels in its descriptor, and once the table is
 * complete every rank reduces the N inputs itself, in rank order — so every rank computes the
 * same bits. Compression does not apply: nothing is worth compressing here, and the exact result
 * is within every stated bound.
 */
export class EagerAllreduce implements Collective<NumericArray> {
  readonly needsTable = true;
  readonly frameless = true;
  received = false;
  private readonly mine: Uint8Array;

  /** `buf` receives the result: the caller's array (in place) or a copy of it. */
  constructor(
    private readonly buf: NumericArray,
    private readonly dtype: DTypeInfo,
    private readonly op: ReduceOp,
  ) {
    this.mine = Buffer.from(bytesOf(buf));
  }

  inline(): Uint8Array {
    return this.mine;
  }

  start(): void {}

  onTable(ctx: OpContext): TableProblem | undefined {
    const want = this.mine.byteLength;
    for (let r = 0; r < ctx.size; r++) {
      const p = ctx.inline[r];
      if (!p || p.byteLength !== want) {
        return { rank: r, problem: `sent ${p ? `${p.byteLength} bytes` : 'no data'} with its descriptor, expected ${want}` };
      }
    }
    const view = (p: Uint8Array) => viewAs(this.dtype.ctor as never, p) as NumericArray;
    const dst = this.buf;
    dst.set(view(ctx.inline[0]!));
    for (let r = 1; r < ctx.size; r++) reduceInto(this.op, dst, view(ctx.inline[r]!));
    if (this.op === 'average') divideInPlace(dst, ctx.size);
    this.received = true;
    return undefined;
  }

  onData(): string {
    return 'a small all-reduce carries its data in the descriptors, not in frames';
  }

  result(): NumericArray {
    return this.buf;
  }
}
