import type { NumericArray } from '../dtypes.js';
import { RingInternalError } from '../errors.js';
import { jsKernels } from './js.js';
import type { Kernels, ReduceOp } from './types.js';

export type { Kernels, ReduceOp } from './types.js';

/** The active backend. The native-kernels work replaces this with the addon when it loads. */
export const kernels: Kernels = jsKernels;

/** dst[i] = op(dst[i], src[i]) through the active backend. */
export function reduceInto(op: ReduceOp, dst: NumericArray, src: NumericArray): void {
  if (dst.length !== src.length || dst.constructor !== src.constructor) {
    throw new RingInternalError(`reduceInto: ${dst.constructor.name}[${dst.length}] vs ${src.constructor.name}[${src.length}]`);
  }
  kernels.reduceInto(op, dst, src);
}

export function divideInPlace(x: NumericArray, divisor: number): void {
  kernels.divideInPlace(x, divisor);
}
