import * as checked from '../kernels/index.js';
import type { Kernels } from '../kernels/types.js';

/**
 * Wire compression of float32 data: 16 bits per element on the wire, float32 everywhere else.
 *
 * fp16 has 5 exponent bits: |x| ≥ 65520 becomes Inf and |x| < 2^-24 becomes 0. So every chunk is
 * scaled by a power of two chosen from its own max |x| (the largest magnitude lands in
 * [2^14, 2^15)), and the frame header carries the inverse. A power of two scales exactly, so the
 * only error is fp16's rounding: per encode, |error| ≤ 2^-11·|x| + 2^-25·2^-14·max|x| of the chunk.
 * bf16 keeps float32's exponent and needs no scale (except above bf16's largest finite value,
 * ~3.39e38, where a chunk is halved first so that finite values never become Inf).
 *
 * Non-finite inputs stay non-finite (Inf and NaN pass through), as they would uncompressed, and
 * stay confined to themselves: a chunk's scale comes from its FINITE elements only (maxAbsFinite),
 * so one Inf or NaN does not leave the rest of its chunk unscaled (where values beyond fp16's range
 * became Inf, and tiny ones 0).
 * The codecs are listed, with 'none', in registry.ts.
 */

export interface Codec {
  readonly name: 'fp16' | 'bf16';
  /** The wire code in the frame header (0 is raw). */
  readonly code: number;
  /** Encodes `src` into `dst` (2 bytes per element); returns the factor that decodes it. */
  encode(dst: Uint8Array, src: Float32Array): number;
  /**
   * Encodes values that are themselves decode(bytes, factor) with that same factor. The result
   * decodes to exactly those values again (test/compression.test.ts checks every 16-bit pattern
   * at every factor), so a hop can pass on a frame it has decoded without keeping its bytes.
   */
  reencode(dst: Uint8Array, decoded: Float32Array, factor: number): void;
  /** dst[i] = decoded(src)[i]. */
  decode(dst: Float32Array, src: Uint8Array, factor: number): void;
  /** acc[i] += decoded(src)[i], in one pass. */
  decodeAdd(acc: Float32Array, src: Uint8Array, factor: number): void;
  /**
   * decodeAdd returning max |acc| afterwards, and encode given that max: a reduced chunk that is
   * passed on is then read once less (fp16 only; the scale depends on the max).
   */
  decodeAddMax?(acc: Float32Array, src: Uint8Array, factor: number): number;
  encodeWithMax?(dst: Uint8Array, src: Float32Array, max: number): number;
}

const MIN_EXP = -126;
const MAX_EXP = 126;

/** 2^k with max·2^k in [2^14, 2^15), clamped to normal float32 powers of two. */
export function fp16Scale(max: number): number {
  if (!(max > 0) || !Number.isFinite(max)) return 1;
  const e = Math.floor(Math.log2(max));
  // log2 may be off by one near powers of two: fix it exactly.
  const exp = 2 ** e > max ? e - 1 : 2 ** (e + 1) <= max ? e + 1 : e;
  return 2 ** Math.min(MAX_EXP, Math.max(MIN_EXP, 14 - exp));
}

const BF16_MAX = 3.3895313892515355e38;

/** The kernels a codec runs on (the active, argument-checking ones of kernels/index.ts, or, in tests, one backend's). */
export type CodecKernels = Pick<
  Kernels,
  'maxAbsFinite' | 'f32ToF16' | 'f16ToF32' | 'addF16Into' | 'addF16IntoMax' | 'f32ToBf16' | 'bf16ToF32' | 'addBf16Into' | 'scaleInPlace'
>;

/** The fp16 and bf16 codecs over kernels `k`. */
export function codecsWith(k: CodecKernels): { fp16: Codec; bf16: Codec } {
  const fp16: Codec = {
    name: 'fp16',
    code: 1,
    encode(dst, src) {
      return this.encodeWithMax!(dst, src, k.maxAbsFinite(src));
    },
    encodeWithMax(dst, src, max) {
      const scale = fp16Scale(max);
      k.f32ToF16(dst, src, scale);
      return 1 / scale;
    },
    decodeAddMax: (acc, src, factor) => k.addF16IntoMax(acc, src, factor),
    reencode: (dst, decoded, factor) => k.f32ToF16(dst, decoded, Math.fround(1 / factor)),
    decode: (dst, src, factor) => k.f16ToF32(dst, src, factor),
    decodeAdd: (acc, src, factor) => k.addF16Into(acc, src, factor),
  };
  const bf16: Codec = {
    name: 'bf16',
    code: 2,
    encode(dst, src) {
      const factor = k.maxAbsFinite(src) <= BF16_MAX ? 1 : 2;
      this.reencode(dst, src, factor);
      return factor;
    },
    reencode(dst, decoded, factor) {
      if (factor === 1) return k.f32ToBf16(dst, decoded);
      const scaled = decoded.slice();
      k.scaleInPlace(scaled, 1 / factor);
      k.f32ToBf16(dst, scaled);
    },
    decode(dst, src, factor) {
      k.bf16ToF32(dst, src);
      if (factor !== 1) k.scaleInPlace(dst, factor);
    },
    decodeAdd(acc, src, factor) {
      if (factor === 1) return k.addBf16Into(acc, src);
      const tmp = new Float32Array(acc.length);
      this.decode(tmp, src, factor);
      for (let i = 0; i < acc.length; i++) acc[i] += tmp[i];
    },
  };
  return { fp16, bf16 };
}

export const { fp16, bf16 } = codecsWith(checked);
