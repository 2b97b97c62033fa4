/**
 * The native backend: loads the C++ addon built from native-bindings/ and wraps it in the Kernels
 * signature. Loading never throws; a failure comes back as a reason string, which index.ts
 * publishes as `kernels.nativeError`.
 */
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';

import type { NumericArray } from '../dtypes.js';
import { jsKernels } from './js.js';
import type { Kernels, ReduceOp } from './types.js';

/**
 * Relative to this file, which sits two levels below the package root both as source
 * (src/kernels/native.ts, under vitest/tsx) and compiled (dist/kernels/native.js).
 */
const ADDON_PATH = '../../native-bindings/build/Release/ringreduce_kernels.node';
/** Must equal kAbiVersion in native-bindings/src/addon.cc. */
const ABI_VERSION = 5;

/** process_vm_readv from a process of this host (see native-bindings/src/shm.cc). */
export type PeerReadFn = (pid: number, address: number, into: Uint8Array) => number;
/** Single-copy transfers between processes of one host: where a sender's bytes are, and a read of them. */
export interface PeerMemory {
  addressOf(bytes: Uint8Array): number;
  read: PeerReadFn;
}

/** What the addon exports for one kernel table (see native-bindings/src/addon.cc). */
interface Binding {
  readonly isa: string;
  reduce(op: number, dst: NumericArray, src: NumericArray): void;
  divide(x: Float32Array | Float64Array, divisor: number): void;
  scale(x: Float32Array | Float64Array, factor: number): void;
  maxAbsFinite(x: Float32Array): number;
  f32ToF16(dst: Uint8Array, src: Float32Array, scale: number): void;
  f16ToF32(dst: Float32Array, src: Uint8Array, scale: number): void;
  addF16(acc: Float32Array, src: Uint8Array, scale: number): void;
  addF16Max(acc: Float32Array, src: Uint8Array, scale: number): number;
  f32ToBf16(dst: Uint8Array, src: Float32Array): void;
  bf16ToF32(dst: Float32Array, src: Uint8Array): void;
  addBf16(acc: Float32Array, src: Uint8Array): void;
}
/** Maps the open file `fd`, a regular file of exactly `bytes`, shared and read-write (Linux). */
export type ShmMapFn = (fd: number, bytes: number) => ArrayBuffer;
/** Allocates the first `bytes` of the open file `fd` now (posix_fallocate); throws with `code` (e.g. 'ENOSPC'). */
export type ShmReserveFn = (fd: number, bytes: number) => void;

interface Addon extends Binding {
  readonly abi: number;
  /** Absent on platforms without it (and in addons built before it existed). */
  readonly shmMap?: ShmMapFn;
  readonly shmReserve?: ShmReserveFn;
  readonly schedYield?: () => void;
  readonly addressOf?: (bytes: Uint8Array) => number;
  readonly peerRead?: PeerReadFn;
  /** The portable C++ table, exported even where the SIMD one is selected (for tests). */
  readonly portable: Binding;
}

const OP_CODES: Record<ReduceOp, number> = { sum: 0, average: 0, min: 1, max: 2, product: 3 };

function wrap(b: Binding): Kernels {
  return {
    backend: 'native',
    isa: b.isa,
    reduceInto: (op, dst, src) => b.reduce(OP_CODES[op], dst, src),
    divideInPlace(x, divisor) {
      // Integer division (truncate toward zero, wrap like a typed-array store) stays in
      // TypeScript: it is rare (integer 'average') and has no hot path.
      if (x instanceof Float32Array || x instanceof Float64Array) b.divide(x, divisor);
      else jsKernels.divideInPlace(x, divisor);
    },
    scaleInPlace: (x, factor) => b.scale(x, factor),
    maxAbsFinite: (x) => b.maxAbsFinite(x),
    f32ToF16: (dst, src, scale) => b.f32ToF16(dst, src, scale),
    f16ToF32: (dst, src, scale) => b.f16ToF32(dst, src, scale),
    addF16Into: (acc, src, scale) => b.addF16(acc, src, scale),
    addF16IntoMax: (acc, src, scale) => b.addF16Max(acc, src, scale),
    f32ToBf16: (dst, src) => b.f32ToBf16(dst, src),
    bf16ToF32: (dst, src) => b.bf16ToF32(dst, src),
    addBf16Into: (acc, src) => b.addBf16(acc, src),
  };
}

export type NativeLoadResult =
  | { ok: true; kernels: Kernels; portable: Kernels; shmMap?: ShmMapFn; shmReserve?: ShmReserveFn; schedYield?: () => void; peer?: PeerMemory }
  | { ok: false; error: string };

export function loadNativeKernels(): NativeLoadResult {
  let addon: Addon;
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as Addon;
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    return { ok: false, error: `native addon not loaded: ${why} (build it with 'node native-bindings/build.mjs')` };
  }
  if (addon.abi !== ABI_VERSION) {
    return {
      ok: false,
      error: `native addon is ABI ${String(addon.abi)}, this code expects ${ABI_VERSION}: rebuild it with 'node native-bindings/build.mjs'`,
    };
  }
  const peer = addon.addressOf && addon.peerRead ? { addressOf: addon.addressOf, read: addon.peerRead } : undefined;
  const reserve = addon.shmReserve;
  const shmReserve = reserve && ((fd: number, bytes: number) => withErrnoCode(() => reserve(fd, bytes)));
  return { ok: true, kernels: wrap(addon), portable: wrap(addon.portable), shmMap: addon.shmMap, shmReserve, schedYield: addon.schedYield, peer };
}

/** The addon's errors carry a numeric `errno`; Node's carry its name as `code` too: so do these. */
function withErrnoCode(f: () => void): void {
  try {
    f();
  } catch (e) {
    const n = (e as { errno?: unknown }).errno;
    const name = typeof n === 'number' ? Object.entries(osConstants.errno).find(([, v]) => v === n)?.[0] : undefined;
    if (name) Object.assign(e as object, { code: name });
    throw e;
  }
}
