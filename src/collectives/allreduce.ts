import { bytesOf, type DTypeInfo, type NumericArray } from '../dtypes.js';
import { divideInPlace, reduceInto, type ReduceOp } from '../kernels/index.js';
import type { DataHeader } from '../transport/wire.js';
import type { Codec } from '../compression/codec.js';
import { viewAs, type Collective, type OpContext } from './collective.js';
import { chunkCount, chunkRange, ringSegment, segmentRange } from './schedule.js';

/**
 * Chunked ring all-reduce (and its first half, reduce-scatter). See schedule.ts for the hop
 * arithmetic. The working buffer is the input itself (in place) or a copy; each received chunk is reduced (or, in
 * the all-gather half, copied) into it and forwarded at the next hop straight from it, so the
 * only per-chunk work is one kernel call and one send. The owner of a segment applies 'average'
 * to its final chunks before the all-gather, so the division happens once and every rank ends
 * with bit-identical values.
 */
export class RingAllreduce implements Collective<NumericArray> {
  readonly needsTable = false;
  private readonly lastHop: number;
  private expected = 0;
  private got = 0;
  /** Next chunk index expected at each hop: frames of a hop arrive in chunk order. */
  private readonly nextChunk: Int32Array;

  /** `buf` is the working buffer: the caller's array (in place) or a copy of it. */
  constructor(
    protected readonly buf: NumericArray,
    private readonly dtype: DTypeInfo,
    private readonly op: ReduceOp,
    private readonly rank: number,
    private readonly size: number,
    /** Reduce-scatter stops after the reduce half. */
    private readonly scatterOnly: boolean,
    /** Wire compression (float32 only): every hop decodes into the float32 buffer and re-encodes. */
    private readonly codec?: Codec,
  ) {
    this.lastHop = scatterOnly ? size - 2 : 2 * size - 3;
    this.nextChunk = new Int32Array(Math.max(0, this.lastHop + 1));
  }

  private span(segment: number) {
    return segmentRange(this.buf.length, this.size, segment);
  }

  start(ctx: OpContext): void {
    const { size } = this;
    for (let hop = 0; hop <= this.lastHop; hop++) {
      this.expected += chunkCount(this.span(ringSegment(ctx.left, hop, size)).length, ctx.chunkElems);
    }
    if (size === 1) {
      this.finish(this.buf);
      return;
    }
    const first = this.span(ringSegment(ctx.rank, 0, size));
    for (let c = 0, n = chunkCount(first.length, ctx.chunkElems); c < n; c++) {
      const r = chunkRange(first, ctx.chunkElems, c)!;
      this.send(ctx, 0, c, this.buf.subarray(r.offset, r.offset + r.length));
    }
  }

  /**
   * Sends a piece of the buffer: as it is, or encoded to 16 bits when the frame leaves (straight
   * into the link's shared-memory slot when it has one free). Deferring the encoding is safe: the
   * piece's values change next only when its finished sum comes back round the ring, which needs
   * this very frame to have left first.
   */
  private send(ctx: OpContext, hop: number, chunk: number, piece: NumericArray): void {
    if (!this.codec) return ctx.send(hop, chunk, bytesOf(piece));
    const codec = this.codec;
    ctx.sendFilled(hop, chunk, piece.length * 2, codec.code, (dst) => codec.encode(dst, piece as Float32Array));
  }

  /** Applies the end-of-reduction step (average) to a fully reduced piece. */
  private finish(piece: NumericArray): void {
    if (this.op === 'average' && this.size > 1) divideInPlace(piece, this.size);
  }

  onData(ctx: OpContext, h: DataHeader, payload: Uint8Array): string | undefined {
    const hop = h.step;
    if (hop > this.lastHop) return `hop ${hop} is past the last hop ${this.lastHop}`;
    if (h.chunk !== this.nextChunk[hop]) return `hop ${hop}: expected chunk ${this.nextChunk[hop]}, got ${h.chunk}`;
    const r = chunkRange(this.span(ringSegment(ctx.left, hop, this.size)), ctx.chunkElems, h.chunk);
    if (!r) return `hop ${hop}: chunk ${h.chunk} is out of range`;
    const codec = this.codec;
    if (h.codec !== (codec?.code ?? 0)) return `hop ${hop}: codec ${h.codec}, expected ${codec?.code ?? 0}`;
    const elemBytes = codec ? 2 : this.dtype.bytes;
    if (payload.byteLength !== r.length * elemBytes) {
      return `hop ${hop} chunk ${h.chunk}: ${payload.byteLength} bytes, expected ${r.length * elemBytes}`;
    }
    this.nextChunk[hop]++;
    this.got++;
    const dst = this.buf.subarray(r.offset, r.offset + r.length);
    if (!codec) {
      const src = viewAs(this.dtype.ctor as never, payload) as NumericArray;
      if (hop <= this.size - 2) {
        reduceInto(this.op, dst, src);
        if (hop === this.size - 2) this.finish(dst);
      } else {
        dst.set(src);
      }
      if (hop < this.lastHop) ctx.send(hop + 1, h.chunk, bytesOf(dst));
      return undefined;
    }
    const acc = dst as Float32Array;
    if (!(h.scale > 0) || !Number.isFinite(h.scale)) return `hop ${hop} chunk ${h.chunk}: bad scale ${h.scale}`;
    if (hop > this.size - 2) {
      // All-gather: decode, and pass the chunk on encoded with the same factor, which gives back
      // exactly the decoded values (Codec.reencode): every rank ends with the owner's bits. The
      // payload is only lent for this call, and copying it to forward later cost up to 24 MiB of
      // queued copies per rank (64 MiB fp16, N=4); re-encoding when the frame leaves costs nothing.
      codec.decode(acc, payload, h.scale);
      const factor = h.scale;
      if (hop < this.lastHop) {
        ctx.sendFilled(hop + 1, h.chunk, acc.length * 2, codec.code, (dst) => {
          codec.reencode(dst, acc, factor);
          return factor;
        });
      }
      return undefined;
    }
    // For a sum, the max |x| that sets the next encoding's scale comes out of the decode-add pass
    // (one read of the chunk less; 'average' divides the owner's chunk after, so only its
    // forwarded chunks use it).
    const summing = this.op === 'sum' || this.op === 'average';
    let max: number | undefined;
    if (summing && codec.decodeAddMax) max = codec.decodeAddMax(acc, payload, h.scale);
    else if (summing) codec.decodeAdd(acc, payload, h.scale);
    else {
      const tmp = new Float32Array(acc.length);
      codec.decode(tmp, payload, h.scale);
      reduceInto(this.op, acc, tmp);
    }
    const encode = (dst: Uint8Array, useMax: boolean) =>
      useMax && max !== undefined ? codec.encodeWithMax!(dst, acc, max) : codec.encode(dst, acc);
    if (hop < this.size - 2) {
      ctx.sendFilled(hop + 1, h.chunk, acc.length * 2, codec.code, (dst) => encode(dst, true));
      return undefined;
    }
    // This rank owns the finished chunk. Encode it once, and keep the decoded value itself, so
    // every rank — this one included — ends with the same bits.
    this.finish(acc);
    if (this.scatterOnly) return undefined;
    ctx.sendFilled(hop + 1, h.chunk, acc.length * 2, codec.code, (dst) => {
      const factor = encode(dst, this.op === 'sum');
      codec.decode(acc, dst, factor);
      return factor;
    });
    return undefined;
  }

  get received(): boolean {
    return this.got === this.expected;
  }

  result(): NumericArray {
    if (!this.scatterOnly) return this.buf;
    const s = this.span(this.rank);
    return this.buf.slice(s.offset, s.offset + s.length);
  }
}
