import type { NumericArray } from '../dtypes.js';

export type ReduceOp = 'sum' | 'average' | 'min' | 'max' | 'product';

/**
 * The kernel set every backend (TypeScript reference, native addon) provides with one signature.
 *
 * Arguments are validated by the caller (src/kernels/index.ts); backends may assume:
 * - `dst.length === src.length` and both are the same typed-array class (reductions);
 * - 16-bit sides (`Uint8Array`, raw little-endian words at any byte offset, odd ones included)
 *   hold exactly 2 bytes per element of the float32 side;
 * - views do not partially overlap (a reduction may get the very same view twice);
 * - `scale` is a float32 value (`Math.fround`ed).
 *
 * Float results are bit-identical across backends: float32 arithmetic is IEEE round-to-nearest
 * on each operation in element order (no FMA, no reassociation). Only NaN payloads produced by
 * arithmetic on NaNs may differ; pure conversions keep NaN bits exactly (see js-half.ts).
 */
export interface Kernels {
  readonly backend: 'js' | 'native';
  /** Which code runs: 'js', or for the addon 'avx2+f16c' / 'portable'. */
  readonly isa: string;
  /** dst[i] = op(dst[i], src[i]); 'average' reduces as 'sum' (the division happens once, at the end). */
  reduceInto(op: ReduceOp, dst: NumericArray, src: NumericArray): void;
  /** x[i] = x[i] / divisor, for 'average' (integer types truncate toward zero). */
  divideInPlace(x: NumericArray, divisor: number): void;
  /** x[i] = x[i] * factor (the product rounded once to the element type). */
  scaleInPlace(x: Float32Array | Float64Array, factor: number): void;
  /** max |x[i]| over the finite x[i]: 0 when there are none; Inf and NaN elements are left out. */
  maxAbsFinite(x: Float32Array): number;
  /** dst = fp16(src[i] * scale), round-to-nearest-even (overflow gives ±Inf, as IEEE says). */
  f32ToF16(dst: Uint8Array, src: Float32Array, scale: number): void;
  /** dst[i] = f32(src[i]) * scale. */
  f16ToF32(dst: Float32Array, src: Uint8Array, scale: number): void;
  /** acc[i] += f32(src[i]) * scale: decode and reduce in one pass. */
  addF16Into(acc: Float32Array, src: Uint8Array, scale: number): void;
  /** addF16Into, returning max |acc[i]| over the finite acc[i] afterwards (as maxAbsFinite): one pass instead of two. */
  addF16IntoMax(acc: Float32Array, src: Uint8Array, scale: number): number;
  /** dst = bf16(src[i]), round-to-nearest-even, NaN stays NaN. */
  f32ToBf16(dst: Uint8Array, src: Float32Array): void;
  /** dst[i] = f32(src[i]) (exact). */
  bf16ToF32(dst: Float32Array, src: Uint8Array): void;
  /** acc[i] += f32(src[i]). */
  addBf16Into(acc: Float32Array, src: Uint8Array): void;
}
