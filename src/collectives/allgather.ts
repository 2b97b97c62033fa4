import { bytesOf, MAX_ELEMENTS, type DTypeInfo, type NumericArray } from '../dtypes.js';
import { RingInvalidArgError } from '../errors.js';
import type { DataHeader } from '../transport/wire.js';
import { viewAs, type Collective, type OpContext } from './collective.js';
import { chunkCount, chunkRange, gatherBlock, type Range } from './schedule.js';

/**
 * Ring all-gather of per-rank blocks whose lengths may differ. At hop t (0..N-2) rank r sends
 * block (r - t) mod N and receives block (r - t - 1) mod N, chunk by chunk, forwarding each chunk
 * at hop t+1 as soon as it lands. Block lengths come from the descriptors every rank published, so
 * received data is placed only once all of them are known.
 */
export class RingAllgather implements Collective<NumericArray> {
  readonly needsTable = true;
  private out: NumericArray | undefined;
  private blocks: Range[] = [];
  private expected = -1;
  private got = 0;
  private readonly nextChunk: Int32Array;

  /**
   * `into`, if given, receives the result when it has exactly the result's length (the
   * hierarchical all-reduce gathers a buffer's segments back into it, `input` being this rank's
   * segment of it in place); otherwise the result is a new array.
   */
  constructor(
    private readonly input: NumericArray,
    private readonly dtype: DTypeInfo,
    private readonly size: number,
    private readonly into?: NumericArray,
  ) {
    this.nextChunk = new Int32Array(Math.max(0, size - 1));
  }

  start(ctx: OpContext): void {
    // Our own block goes out at hop 0 straight from the input; no counts are needed for that.
    for (let c = 0, n = chunkCount(this.input.length, ctx.chunkElems); c < n && this.size > 1; c++) {
      const r = chunkRange({ offset: 0, length: this.input.length }, ctx.chunkElems, c)!;
      ctx.send(0, c, bytesOf(this.input.subarray(r.offset, r.offset + r.length)));
    }
  }

  onTable(ctx: OpContext): void {
    let offset = 0;
    this.blocks = ctx.descriptors.map((d) => {
      const b = { offset, length: d!.count };
      offset += d!.count;
      return b;
    });
    // Each count is at most MAX_ELEMENTS (descriptor.ts), their sum need not be: every rank sees
    // the same table and fails the same way, and the ring stays usable.
    if (offset > MAX_ELEMENTS) {
      const counts = ctx.descriptors.map((d, r) => `rank ${r}: ${d!.count}`).join('; ');
      throw new RingInvalidArgError(`rank ${ctx.rank}: allgather: the result would have ${offset} elements (${counts}), more than an array can hold (${MAX_ELEMENTS})`, {
        rank: ctx.rank,
        op: 'allgather',
        field: 'count',
      });
    }
    const out = this.into?.length === offset ? this.into : new this.dtype.ctor(offset);
    const at = this.blocks[ctx.rank].offset;
    // Already in place (`into` holds `input`): a copy onto itself would cost a pass over it.
    const inPlace = this.input.buffer === out.buffer && this.input.byteOffset === out.byteOffset + at * this.dtype.bytes;
    if (!inPlace) out.set(this.input, at);
    this.out = out;
    this.expected = 0;
    for (let hop = 0; hop < this.size - 1; hop++) {
      this.expected += chunkCount(this.blocks[gatherBlock(ctx.left, hop, this.size)].length, ctx.chunkElems);
    }
  }

  onData(ctx: OpContext, h: DataHeader, payload: Uint8Array): string | undefined {
    if (h.codec !== 0) return `codec ${h.codec} where raw data was expected`;
    const hop = h.step;
    if (hop >= this.size - 1) return `hop ${hop} is past the last hop ${this.size - 2}`;
    if (h.chunk !== this.nextChunk[hop]) return `hop ${hop}: expected chunk ${this.nextChunk[hop]}, got ${h.chunk}`;
    const r = chunkRange(this.blocks[gatherBlock(ctx.left, hop, this.size)], ctx.chunkElems, h.chunk);
    if (!r) return `hop ${hop}: chunk ${h.chunk} is out of range`;
    if (payload.byteLength !== r.length * this.dtype.bytes) {
      return `hop ${hop} chunk ${h.chunk}: ${payload.byteLength} bytes, expected ${r.length * this.dtype.bytes}`;
    }
    this.nextChunk[hop]++;
    const dst = this.out!.subarray(r.offset, r.offset + r.length);
    dst.set(viewAs(this.dtype.ctor as never, payload) as NumericArray);
    this.got++;
    if (hop < this.size - 2) ctx.send(hop + 1, h.chunk, bytesOf(dst));
    return undefined;
  }

  get received(): boolean {
    return this.got === this.expected;
  }

  result(): NumericArray {
    return this.out!;
  }
}
