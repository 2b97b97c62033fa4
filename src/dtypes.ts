import { constants } from 'node:buffer';

/** The element types the collectives accept, and their wire codes (stable: they travel in frames). */
export type NumericArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Uint16Array
  | Int8Array
  | Uint8Array;

export type DType = 'float32' | 'float64' | 'int32' | 'uint32' | 'int16' | 'uint16' | 'int8' | 'uint8';

export interface DTypeInfo {
  readonly name: DType;
  readonly code: number;
  readonly bytes: number;
  readonly ctor: { new (n: number): NumericArray; new (b: ArrayBufferLike, off: number, n: number): NumericArray };
  readonly isFloat: boolean;
}

const table: DTypeInfo[] = [
  { name: 'float32', code: 1, bytes: 4, ctor: Float32Array, isFloat: true },
  { name: 'float64', code: 2, bytes: 8, ctor: Float64Array, isFloat: true },
  { name: 'int32', code: 3, bytes: 4, ctor: Int32Array, isFloat: false },
  { name: 'uint32', code: 4, bytes: 4, ctor: Uint32Array, isFloat: false },
  { name: 'int16', code: 5, bytes: 2, ctor: Int16Array, isFloat: false },
  { name: 'uint16', code: 6, bytes: 2, ctor: Uint16Array, isFloat: false },
  { name: 'int8', code: 7, bytes: 1, ctor: Int8Array, isFloat: false },
  { name: 'uint8', code: 8, bytes: 1, ctor: Uint8Array, isFloat: false },
] as DTypeInfo[];

export const DTYPES: Readonly<Record<DType, DTypeInfo>> = Object.fromEntries(table.map((t) => [t.name, t])) as Record<
  DType,
  DTypeInfo
>;

/** The dtype of a typed array, or undefined when it is not one the collectives accept. */
export function dtypeOf(x: unknown): DTypeInfo | undefined {
  // Buffer is a Uint8Array subclass: treat it as uint8.
  if (x instanceof Float32Array) return DTYPES.float32;
  if (x instanceof Float64Array) return DTYPES.float64;
  if (x instanceof Int32Array) return DTYPES.int32;
  if (x instanceof Uint32Array) return DTYPES.uint32;
  if (x instanceof Int16Array) return DTYPES.int16;
  if (x instanceof Uint16Array) return DTYPES.uint16;
  if (x instanceof Int8Array) return DTYPES.int8;
  if (x instanceof Uint8Array) return DTYPES.uint8;
  return undefined;
}

/**
 * The most elements an array may hold in this Node.js (2^32 in Node 20): no rank can call a
 * collective with more, so a count above it from a peer is a lie, and a result above it (an
 * all-gather's total) cannot be made.
 */
export const MAX_ELEMENTS: number = constants.MAX_LENGTH;

export function dtypeByCode(code: number): DTypeInfo | undefined {
  return table.find((t) => t.code === code);
}

/** A byte view of a typed array (no copy). */
export function bytesOf(x: NumericArray): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}
