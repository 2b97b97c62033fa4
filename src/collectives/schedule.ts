/**
 * The offset arithmetic of every ring schedule, as pure functions that the sending and the
 * receiving rank both call. Nothing here knows about sockets.
 *
 * A buffer of `count` elements is cut into `size` segments, as evenly as possible (the first
 * `count % size` segments hold one element more). Each segment is cut into chunks of at most
 * `chunkElems` elements; a chunk is the unit of one data frame. Empty segments have no chunks.
 *
 * Ring all-reduce runs 2(N-1) hops. At hop h, rank r sends segment (r - h - 1) mod N to its right
 * neighbour and receives segment (r - h - 2) mod N from its left. Hops 0..N-2 are the
 * reduce-scatter (add what arrives into the local buffer); after hop N-2 rank r holds the fully
 * reduced segment r. Hops N-1..2N-3 are the all-gather (copy what arrives). Because the segment a
 * rank receives at hop h is exactly the one it sends at hop h+1, every received chunk is forwarded
 * as soon as it is reduced — the pipeline needs no other schedule.
 */
export interface Range {
  offset: number;
  length: number;
}

export const mod = (a: number, n: number): number => ((a % n) + n) % n;

/** Segment `i` of `count` elements split in `parts`. */
export function segmentRange(count: number, parts: number, i: number): Range {
  const base = Math.floor(count / parts);
  const rem = count % parts;
  return { offset: i * base + Math.min(i, rem), length: base + (i < rem ? 1 : 0) };
}

/** Number of chunks of a span of `length` elements. */
export function chunkCount(length: number, chunkElems: number): number {
  return Math.ceil(length / chunkElems);
}

/** Chunk `c` of the span `span`; undefined when c is out of range. */
export function chunkRange(span: Range, chunkElems: number, c: number): Range | undefined {
  if (!Number.isInteger(c) || c < 0 || c >= chunkCount(span.length, chunkElems)) return undefined;
  const offset = c * chunkElems;
  return { offset: span.offset + offset, length: Math.min(chunkElems, span.length - offset) };
}

/** The segment that `sender` sends at ring hop `hop` (its right neighbour receives the same). */
export function ringSegment(sender: number, hop: number, size: number): number {
  return mod(sender - hop - 1, size);
}

/** The block (= origin rank) that `sender` forwards at all-gather hop `hop`. */
export function gatherBlock(sender: number, hop: number, size: number): number {
  return mod(sender - hop, size);
}
