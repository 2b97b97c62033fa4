import type { NumericArray } from '../dtypes.js';
import type { Kernels, ReduceOp } from './types.js';

/**
 * The TypeScript reference kernels. Typed-array stores give the wrap-around semantics of the
 * element type (int32 sum wraps modulo 2^32); int32/uint32 products use Math.imul because a
 * product of two 32-bit integers can exceed 2^53 before the store would wrap it.
 */
function sum(dst: NumericArray, src: NumericArray): void {
  const n = dst.length;
  for (let i = 0; i < n; i++) dst[i] += src[i];
}
function min(dst: NumericArray, src: NumericArray): void {
  const n = dst.length;
  // NaN propagates (like Math.min and IEEE minimum), so a NaN on any rank is never hidden.
  for (let i = 0; i < n; i++) {
    const a = dst[i], b = src[i];
    if (b < a || b !== b) dst[i] = b;
  }
}
function max(dst: NumericArray, src: NumericArray): void {
  const n = dst.length;
  for (let i = 0; i < n; i++) {
    const a = dst[i], b = src[i];
    if (b > a || b !== b) dst[i] = b;
  }
}
function product(dst: NumericArray, src: NumericArray): void {
  const n = dst.length;
  if (dst instanceof Int32Array || dst instanceof Uint32Array) {
    for (let i = 0; i < n; i++) dst[i] = Math.imul(dst[i], src[i]);
  } else {
    for (let i = 0; i < n; i++) dst[i] *= src[i];
  }
}

export const jsKernels: Kernels = {
  backend: 'js',
  reduceInto(op: ReduceOp, dst: NumericArray, src: NumericArray): void {
    switch (op) {
      case 'sum':
      case 'average':
        return sum(dst, src);
      case 'min':
        return min(dst, src);
      case 'max':
        return max(dst, src);
      case 'product':
        return product(dst, src);
    }
  },
  divideInPlace(x: NumericArray, divisor: number): void {
    const n = x.length;
    if (x instanceof Float32Array || x instanceof Float64Array) {
      for (let i = 0; i < n; i++) x[i] /= divisor;
    } else {
      for (let i = 0; i < n; i++) x[i] = Math.trunc(x[i] / divisor);
    }
  },
};
