import type { NumericArray } from '../dtypes.js';

export type ReduceOp = 'sum' | 'average' | 'min' | 'max' | 'product';

/**
 * The kernel set every backend (TypeScript reference, native addon) provides with one signature.
 * Arguments are validated by the caller (src/kernels/index.ts); backends may assume
 * `dst.length === src.length` and that both are the same typed-array class.
 */
export interface Kernels {
  readonly backend: 'js' | 'native';
  /** dst[i] = op(dst[i], src[i]); 'average' reduces as 'sum' (the division happens once, at the end). */
  reduceInto(op: ReduceOp, dst: NumericArray, src: NumericArray): void;
  /** x[i] = x[i] / divisor, for 'average' (integer types truncate toward zero). */
  divideInPlace(x: NumericArray, divisor: number): void;
}
