import { bytesOf, type DTypeInfo, type NumericArray } from '../dtypes.js';
import type { DataHeader } from '../transport/wire.js';
import { viewAs, type Collective, type OpContext } from './collective.js';
import { chunkCount, chunkRange } from './schedule.js';

/**
 * Pipelined chain broadcast along the ring: root -> root+1 -> ... -> root-1. Every non-root rank
 * forwards each chunk to its right as soon as it arrives (unless its right is the root), so a
 * large buffer costs about one transfer time plus N-2 chunk latencies.
 */
export class RingBroadcast implements Collective<NumericArray> {
  readonly needsTable = false;
  private readonly out: NumericArray;
  private expected = 0;
  private got = 0;
  private nextChunk = 0;

  constructor(input: NumericArray, private readonly dtype: DTypeInfo, private readonly root: number, rank: number) {
    this.out = rank === root ? input.slice() : new dtype.ctor(input.length);
  }

  start(ctx: OpContext): void {
    const all = { offset: 0, length: this.out.length };
    const n = chunkCount(all.length, ctx.chunkElems);
    if (ctx.rank !== this.root) {
      this.expected = n;
      return;
    }
    for (let c = 0; c < n && ctx.size > 1; c++) {
      const r = chunkRange(all, ctx.chunkElems, c)!;
      ctx.send(0, c, bytesOf(this.out.subarray(r.offset, r.offset + r.length)));
    }
  }

  onData(ctx: OpContext, h: DataHeader, payload: Uint8Array): string | undefined {
    if (h.codec !== 0) return `codec ${h.codec} where raw data was expected`;
    if (ctx.rank === this.root) return 'the root of a broadcast receives no data';
    if (h.step !== 0 || h.chunk !== this.nextChunk) return `expected hop 0 chunk ${this.nextChunk}, got hop ${h.step} chunk ${h.chunk}`;
    const r = chunkRange({ offset: 0, length: this.out.length }, ctx.chunkElems, h.chunk);
    if (!r) return `chunk ${h.chunk} is out of range`;
    if (payload.byteLength !== r.length * this.dtype.bytes) return `chunk ${h.chunk}: ${payload.byteLength} bytes, expected ${r.length * this.dtype.bytes}`;
    this.nextChunk++;
    const dst = this.out.subarray(r.offset, r.offset + r.length);
    dst.set(viewAs(this.dtype.ctor as never, payload) as NumericArray);
    this.got++;
    if (ctx.right !== this.root) ctx.send(0, h.chunk, bytesOf(dst));
    return undefined;
  }

  get received(): boolean {
    return this.got === this.expected;
  }

  result(): NumericArray {
    return this.out;
  }
}
