import { bf16, fp16, type Codec } from './codec.js';

/**
 * Every wire compression, in one table: its name (what options and descriptors carry), its code
 * in the frame header, its bytes per element on the wire and its codec. Option checks, descriptor
 * validation and the frame-size rule all read this table; a new codec is one entry here.
 */
export interface WireFormat {
  readonly name: string;
  /** The frame header's codec field (0 is raw). */
  readonly code: number;
  /** Bytes per element on the wire; undefined for raw data (the dtype's own size). */
  readonly bytesPerElement: number | undefined;
  readonly codec: Codec | undefined;
}

const FORMATS = [
  { name: 'none', code: 0, bytesPerElement: undefined, codec: undefined },
  { name: 'fp16', code: fp16.code, bytesPerElement: 2, codec: fp16 },
  { name: 'bf16', code: bf16.code, bytesPerElement: 2, codec: bf16 },
] as const satisfies readonly WireFormat[];

export type Compression = (typeof FORMATS)[number]['name'];

const BY_NAME: ReadonlyMap<unknown, WireFormat> = new Map(FORMATS.map((f) => [f.name, f]));

/** The names, in table order ('none' first). */
export const COMPRESSIONS: readonly Compression[] = FORMATS.map((f) => f.name);

export function isCompression(v: unknown): v is Compression {
  return BY_NAME.has(v);
}

/** The codec of a compression; undefined for 'none'. */
export function codecFor(c: Compression): Codec | undefined {
  return BY_NAME.get(c)?.codec;
}

/**
 * Bytes per element on the wire for data of `dtypeBytes` per element under `compression`.
 * A frame carries chunkBytes on the wire: with 16-bit compression that is twice the elements of
 * float32 (halving the frames per operation, and their notices, measured faster on shared cores).
 */
export function wireBytesPerElement(compression: string, dtypeBytes: number): number {
  return BY_NAME.get(compression)?.bytesPerElement ?? dtypeBytes;
}
