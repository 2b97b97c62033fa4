/**
 * The one kernels module: every reduction and fp16/bf16 conversion in ringreduce goes through the
 * functions exported here, which validate their arguments and call the active backend.
 *
 * The active backend is the native addon (native-bindings/, via native.ts) when it loads, with
 * small inputs routed to TypeScript (cutover.ts); otherwise the TypeScript reference (js.ts).
 * `kernels.backend` says which, `kernels.nativeError` why the addon is not in use, and
 * describeKernels() says both in one line for `ringrun --version`/`info`.
 */
import type { NumericArray } from '../dtypes.js';
import { tuning } from '../env.js';
import { RingInternalError } from '../errors.js';
import { withCutover } from './cutover.js';
import { jsKernels } from './js.js';
import { loadNativeKernels, type PeerMemory, type ShmMapFn, type ShmReserveFn } from './native.js';
import type { Kernels, ReduceOp } from './types.js';

export type { Kernels, ReduceOp } from './types.js';

/** 16-bit wire words: bytes at any offset (e.g. a ws Buffer slice), or an aligned Uint16Array. */
export type HalfArray = Uint8Array | Uint16Array;

export interface ActiveKernels extends Kernels {
  /** Why the native addon is not the active backend; undefined when it is. */
  readonly nativeError: string | undefined;
}

/**
 * RINGREDUCE_NO_NATIVE=1 forces the TypeScript kernels; src/env.ts reads it. tuning() also parses
 * the other knobs and throws on a malformed one: that error belongs to init(), not to loading the
 * kernels (which must never throw), so here it only means "not forced".
 */
function nativeDisabled(): boolean {
  try {
    return tuning().noNative;
  } catch {
    return false;
  }
}

let shmMap: ShmMapFn | undefined;
let shmReserve: ShmReserveFn | undefined;
let yieldFn: (() => void) | undefined;
let peer: PeerMemory | undefined;

function selectBackend(): ActiveKernels {
  if (nativeDisabled()) return { ...jsKernels, nativeError: 'disabled by RINGREDUCE_NO_NATIVE' };
  const loaded = loadNativeKernels();
  if (!loaded.ok) return { ...jsKernels, nativeError: loaded.error };
  shmMap = loaded.shmMap;
  shmReserve = loaded.shmReserve;
  yieldFn = loaded.schedYield;
  peer = loaded.peer;
  return { ...withCutover(loaded.kernels, jsKernels), nativeError: undefined };
}

/** The active backend. */
export const kernels: ActiveKernels = Object.freeze(selectBackend());

/** The addon's shared-memory map (for same-host links, transport/shm/region.ts); undefined without the addon. */
export const sharedMemoryMap: ShmMapFn | undefined = shmMap;

/** posix_fallocate through the addon (a region's memory, reserved up front); undefined without it (region.ts writes zeros). */
export const sharedMemoryReserve: ShmReserveFn | undefined = shmReserve;

/** Single-copy reads from another process of this host (large point-to-point sends); undefined without the addon. */
export const peerMemory: PeerMemory | undefined = peer;

/** sched_yield(2) through the addon (for busy polling: see Communicator); undefined without it. */
export const schedYield: (() => void) | undefined = yieldFn;

/** e.g. "native (avx2+f16c)" or "js (disabled by RINGREDUCE_NO_NATIVE)", for `ringrun --version`. */
export function describeKernels(): string {
  return kernels.backend === 'native' ? `native (${kernels.isa})` : `js (${kernels.nativeError ?? 'TypeScript'})`;
}

// ---- argument checks --------------------------------------------------------------------------

function describe(x: unknown): string {
  return ArrayBuffer.isView(x) ? `${x.constructor.name}[${(x as NumericArray).length}]` : typeof x;
}

function sharesBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return (
    a.buffer === b.buffer &&
    a.byteLength > 0 &&
    b.byteLength > 0 &&
    a.byteOffset < b.byteOffset + b.byteLength &&
    b.byteOffset < a.byteOffset + a.byteLength
  );
}

/** Element-wise kernels accept the very same view twice, but not two views that share part. */
function partiallyOverlap(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return sharesBytes(a, b) && !(a.byteOffset === b.byteOffset && a.byteLength === b.byteLength);
}

function checkFloat32(what: string, x: unknown): asserts x is Float32Array {
  if (!(x instanceof Float32Array)) throw new RingInternalError(`${what}: expected a Float32Array, got ${describe(x)}`);
}

/** The byte view of a 16-bit side holding `count` words. */
function halfBytes(what: string, x: HalfArray, count: number, other: ArrayBufferView): Uint8Array {
  const bytes = x instanceof Uint8Array ? x : x instanceof Uint16Array ? new Uint8Array(x.buffer, x.byteOffset, x.byteLength) : undefined;
  if (bytes === undefined || bytes.length !== 2 * count) {
    throw new RingInternalError(`${what}: the 16-bit side must be a Uint8Array of ${2 * count} bytes or a Uint16Array[${count}], got ${describe(x)}`);
  }
  if (sharesBytes(bytes, other)) throw new RingInternalError(`${what}: the 16-bit and float32 sides overlap`);
  return bytes;
}

function checkScale(what: string, scale: number): number {
  if (typeof scale !== 'number') throw new RingInternalError(`${what}: scale must be a number, got ${typeof scale}`);
  return Math.fround(scale);
}

// ---- the kernels ------------------------------------------------------------------------------

/** dst[i] = op(dst[i], src[i]) through the active backend. */
export function reduceInto(op: ReduceOp, dst: NumericArray, src: NumericArray): void {
  if (dst.length !== src.length || dst.constructor !== src.constructor) {
    throw new RingInternalError(`reduceInto: ${describe(dst)} vs ${describe(src)}`);
  }
  if (partiallyOverlap(dst, src)) throw new RingInternalError('reduceInto: dst and src partially overlap');
  kernels.reduceInto(op, dst, src);
}

export function divideInPlace(x: NumericArray, divisor: number): void {
  kernels.divideInPlace(x, divisor);
}

/** x[i] = x[i] * factor, rounded once to the element type. */
export function scaleInPlace(x: Float32Array | Float64Array, factor: number): void {
  if (!(x instanceof Float32Array || x instanceof Float64Array)) {
    throw new RingInternalError(`scaleInPlace: expected a Float32Array or Float64Array, got ${describe(x)}`);
  }
  kernels.scaleInPlace(x, factor);
}

/**
 * max |x[i]| over the finite x[i] (0 when there are none): what sets a chunk's fp16 scale, which
 * an Inf or NaN among its elements must not (it stays Inf or NaN through any scale).
 */
export function maxAbsFinite(x: Float32Array): number {
  checkFloat32('maxAbsFinite', x);
  return kernels.maxAbsFinite(x);
}

/** dst = fp16(src[i] * scale), little-endian. `scale` is rounded to float32; 1 costs nothing. */
export function f32ToF16(dst: HalfArray, src: Float32Array, scale = 1): void {
  checkFloat32('f32ToF16', src);
  kernels.f32ToF16(halfBytes('f32ToF16', dst, src.length, src), src, checkScale('f32ToF16', scale));
}

/** dst[i] = f32(src[i]) * scale. */
export function f16ToF32(dst: Float32Array, src: HalfArray, scale = 1): void {
  checkFloat32('f16ToF32', dst);
  kernels.f16ToF32(dst, halfBytes('f16ToF32', src, dst.length, dst), checkScale('f16ToF32', scale));
}

/** acc[i] += f32(src[i]) * scale, in one pass (the fp16 reduce-scatter step). */
export function addF16Into(acc: Float32Array, src: HalfArray, scale = 1): void {
  checkFloat32('addF16Into', acc);
  kernels.addF16Into(acc, halfBytes('addF16Into', src, acc.length, acc), checkScale('addF16Into', scale));
}

/** addF16Into, returning max |acc[i]| over the finite acc[i] afterwards (as maxAbsFinite would), in the same pass. */
export function addF16IntoMax(acc: Float32Array, src: HalfArray, scale = 1): number {
  checkFloat32('addF16IntoMax', acc);
  return kernels.addF16IntoMax(acc, halfBytes('addF16IntoMax', src, acc.length, acc), checkScale('addF16IntoMax', scale));
}

/** dst = bf16(src[i]), little-endian. */
export function f32ToBf16(dst: HalfArray, src: Float32Array): void {
  checkFloat32('f32ToBf16', src);
  kernels.f32ToBf16(halfBytes('f32ToBf16', dst, src.length, src), src);
}

/** dst[i] = f32(src[i]). */
export function bf16ToF32(dst: Float32Array, src: HalfArray): void {
  checkFloat32('bf16ToF32', dst);
  kernels.bf16ToF32(dst, halfBytes('bf16ToF32', src, dst.length, dst));
}

/** acc[i] += f32(src[i]), in one pass. */
export function addBf16Into(acc: Float32Array, src: HalfArray): void {
  checkFloat32('addBf16Into', acc);
  kernels.addBf16Into(acc, halfBytes('addBf16Into', src, acc.length, acc));
}
