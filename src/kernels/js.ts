import type { NumericArray } from '../dtypes.js';
import { addBf16Into, addF16Into, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './js-half.js';
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

// One float32 cell seen as int32, to turn bits into a float.
const cellF = new Float32Array(1);
const cellI = new Int32Array(cellF.buffer);

/** max |x[i]| on the bits: with the sign cleared, integer order is float order and NaN > Inf. */
function maxAbs(x: Float32Array): number {
  const b = new Int32Array(x.buffer, x.byteOffset, x.length);
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    const a = b[i] & 0x7fffffff;
    if (a > m) m = a;
  }
  cellI[0] = m;
  return cellF[0];
}

export const jsKernels: Kernels = {
  backend: 'js',
  isa: 'js',
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
  scaleInPlace(x: Float32Array | Float64Array, factor: number): void {
    const n = x.length;
    for (let i = 0; i < n; i++) x[i] *= factor;
  },
  maxAbs,
  f32ToF16,
  f16ToF32,
  addF16Into,
  f32ToBf16,
  bf16ToF32,
  addBf16Into,
};
