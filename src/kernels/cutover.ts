/**
 * Small inputs stay in TypeScript: a call into the addon has a fixed cost (unwrapping two typed
 * arrays through N-API: 0.2-0.5 µs on the 2-core development VM) that a short JS loop beats.
 * Like ws's bufferutil (`if (length < 48)` stays in JS), the native backend is used from these
 * element counts up. Measured with `npm run bench:kernels -- --cutover`: native overtook
 * TypeScript at 64 elements for sum/max/scale (JS does ~2-4 ns per element there) and at 8 for
 * every conversion (JS does ~10 ns per element); the conversion cut is set a little higher, at 16,
 * where the two were within noise of each other only at 8.
 */
import type { Kernels } from './types.js';

export interface Cutover {
  /** reduceInto, divideInPlace, scaleInPlace, maxAbsFinite: cheap per element in JS. */
  readonly arithmetic: number;
  /** Conversions and fused decode-adds: several integer ops per element in JS. */
  readonly conversion: number;
}

export const DEFAULT_CUTOVER: Cutover = { arithmetic: 64, conversion: 16 };

/** `native` for inputs of at least the cut-over size, `js` below it. */
export function withCutover(native: Kernels, js: Kernels, cut: Cutover = DEFAULT_CUTOVER): Kernels {
  const a = cut.arithmetic;
  const c = cut.conversion;
  return {
    backend: native.backend,
    isa: native.isa,
    reduceInto: (op, dst, src) => (dst.length < a ? js : native).reduceInto(op, dst, src),
    divideInPlace: (x, divisor) => (x.length < a ? js : native).divideInPlace(x, divisor),
    scaleInPlace: (x, factor) => (x.length < a ? js : native).scaleInPlace(x, factor),
    maxAbsFinite: (x) => (x.length < a ? js : native).maxAbsFinite(x),
    f32ToF16: (dst, src, scale) => (src.length < c ? js : native).f32ToF16(dst, src, scale),
    f16ToF32: (dst, src, scale) => (dst.length < c ? js : native).f16ToF32(dst, src, scale),
    addF16Into: (acc, src, scale) => (acc.length < c ? js : native).addF16Into(acc, src, scale),
    addF16IntoMax: (acc, src, scale) => (acc.length < c ? js : native).addF16IntoMax(acc, src, scale),
    f32ToBf16: (dst, src) => (src.length < c ? js : native).f32ToBf16(dst, src),
    bf16ToF32: (dst, src) => (dst.length < c ? js : native).bf16ToF32(dst, src),
    addBf16Into: (acc, src) => (acc.length < c ? js : native).addBf16Into(acc, src),
  };
}
