import { type DType, type NumericArray, dtypeOf } from '../dtypes.js';
import { addBf16Into, addF16Into, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './js-half.js';
import type { Kernels, ReduceOp } from './types.js';

/**
 * The TypeScript reference kernels. Typed-array stores give the wrap-around semantics of the
 * element type (int32 sum wraps modulo 2^32); int32/uint32 products use Math.imul because a
 * product of two 32-bit integers can exceed 2^53 before the store would wrap it. Float32
 * arithmetic happens in double and is rounded once by the store, which for one + or * of two
 * float32 values gives exactly the IEEE float32 result (what the native kernels compute).
 *
 * min/max: `if (b < a || b !== b) dst = b` — NaN propagates from either side (a NaN already in
 * dst fails every comparison and stays), like Math.min, so a NaN on any rank is never hidden.
 *
 * V8 keeps type feedback per function literal. One loop that sees several typed-array classes
 * turns megamorphic and runs ~30x slower (2^20 float32 sums: 3 ms alone, 130 ms after the same
 * loop has seen the other seven types), so every (op, element type) pair is its own literal
 * below, even where the text repeats.
 */
type Loop = (d: NumericArray, s: NumericArray) => void;

const SUM: Record<DType, Loop> = {
  float32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] += s[i]; },
  float64: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] += s[i]; },
  int32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] += s[i]; },
  uint32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] += s[i]; },
  int16: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] += s[i]; },
  uint16: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] += s[i]; },
  int8: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] += s[i]; },
  uint8: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] += s[i]; },
};
const MIN: Record<DType, Loop> = {
  float32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b < d[i] || b !== b) d[i] = b; } },
  float64: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b < d[i] || b !== b) d[i] = b; } },
  int32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b < d[i]) d[i] = b; } },
  uint32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b < d[i]) d[i] = b; } },
  int16: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b < d[i]) d[i] = b; } },
  uint16: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b < d[i]) d[i] = b; } },
  int8: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b < d[i]) d[i] = b; } },
  uint8: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b < d[i]) d[i] = b; } },
};
const MAX: Record<DType, Loop> = {
  float32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b > d[i] || b !== b) d[i] = b; } },
  float64: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b > d[i] || b !== b) d[i] = b; } },
  int32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b > d[i]) d[i] = b; } },
  uint32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b > d[i]) d[i] = b; } },
  int16: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b > d[i]) d[i] = b; } },
  uint16: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b > d[i]) d[i] = b; } },
  int8: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b > d[i]) d[i] = b; } },
  uint8: (d, s) => { for (let i = 0, n = d.length; i < n; i++) { const b = s[i]; if (b > d[i]) d[i] = b; } },
};
const PRODUCT: Record<DType, Loop> = {
  float32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] *= s[i]; },
  float64: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] *= s[i]; },
  int32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] = Math.imul(d[i], s[i]); },
  uint32: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] = Math.imul(d[i], s[i]); },
  int16: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] *= s[i]; },
  uint16: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] *= s[i]; },
  int8: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] *= s[i]; },
  uint8: (d, s) => { for (let i = 0, n = d.length; i < n; i++) d[i] *= s[i]; },
};

const LOOPS: Record<ReduceOp, Record<DType, Loop>> = { sum: SUM, average: SUM, min: MIN, max: MAX, product: PRODUCT };

// One float32 cell seen as int32, to turn bits into a float.
const cellF = new Float32Array(1);
const cellI = new Int32Array(cellF.buffer);

/**
 * max |x[i]| over the finite x[i], on the bits: with the sign cleared, integer order is float
 * order, and the patterns from 0x7f800000 up (Inf, NaN) are left out.
 */
function maxAbsFinite(x: Float32Array): number {
  const b = new Int32Array(x.buffer, x.byteOffset, x.length);
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    const a = b[i] & 0x7fffffff;
    if (a > m && a < 0x7f800000) m = a;
  }
  cellI[0] = m;
  return cellF[0];
}

export const jsKernels: Kernels = {
  backend: 'js',
  isa: 'js',
  reduceInto(op: ReduceOp, dst: NumericArray, src: NumericArray): void {
    // dtypeOf is defined for every NumericArray (Buffer counts as uint8).
    LOOPS[op][dtypeOf(dst)!.name](dst, src);
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
  maxAbsFinite,
  f32ToF16,
  f16ToF32,
  addF16Into,
  addF16IntoMax(acc: Float32Array, src: Uint8Array, scale: number): number {
    addF16Into(acc, src, scale);
    return maxAbsFinite(acc);
  },
  f32ToBf16,
  bf16ToF32,
  addBf16Into,
};
