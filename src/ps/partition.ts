/**
 * Which parameter server holds which part of the model, as one pure function every worker computes
 * alike (as collectives/schedule.ts gives both peers their offsets): no message decides it.
 *
 * Terms. A *tensor* is one variable of the model (name, element count). A *chunk* is a contiguous
 * run of one tensor's elements; its *key* is its index in the partition's chunk list, which is the
 * tensors in name order, each cut into chunks from its first element on. A *server* holds a set of
 * chunks.
 *
 * The schedule. Tensors are sorted by name (ranks may list them in any order). A tensor longer
 * than the *chunk size* is cut into ceil(n / size) chunks of nearly equal length (they differ by
 * at most one element). The chunk size is the smaller of `maxChunkElements` (what one data frame
 * carries) and a fifth of a server's mean load, but at least `minChunkElements` (a tiny model is
 * not cut into crumbs). Then chunks are placed greedily, longest first (ties: lower key), each on
 * the server holding the fewest elements so far (ties: the lower server): when a chunk is placed,
 * that server holds at most the mean, so no server ends above mean + the longest chunk, which is
 * at most 1.2 x the mean whenever the chunk size is a fifth of the mean (the model has at least
 * 5 x servers x minChunkElements elements) or tensors are no longer than that.
 */
import { byName } from '../engine/plan.js';
export interface TensorSpec {
  name: string;
  /** Element count. */
  size: number;
}

export interface Chunk {
  key: number;
  /** Index of its tensor in the name-sorted list. */
  tensor: number;
  name: string;
  /** First element within the tensor, and element count. */
  offset: number;
  length: number;
  server: number;
}

export interface Partition {
  /** The tensors in name order (the order keys follow). */
  tensors: TensorSpec[];
  chunks: Chunk[];
  /** Elements each server holds. */
  load: number[];
}

export interface PartitionOptions {
  servers: number;
  /** The longest chunk, in elements (a data frame's worth). */
  maxChunkElements: number;
  /** Tensors up to this many elements stay whole. Default 1024. */
  minChunkElements?: number;
}

export function partition(tensors: readonly TensorSpec[], o: PartitionOptions): Partition {
  const { servers, maxChunkElements } = o;
  const minChunk = o.minChunkElements ?? 1024;
  if (!Number.isSafeInteger(servers) || servers < 1) throw new RangeError(`servers must be an integer >= 1, got ${servers}`);
  if (!Number.isSafeInteger(maxChunkElements) || maxChunkElements < 1) throw new RangeError(`maxChunkElements must be an integer >= 1, got ${maxChunkElements}`);
  const sorted = [...tensors].sort(byName);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].name === sorted[i - 1].name) throw new RangeError(`tensor '${sorted[i].name}' is listed twice`);
  }
  const total = sorted.reduce((s, t) => s + t.size, 0);
  const chunkSize = Math.max(1, Math.min(maxChunkElements, Math.max(minChunk, Math.floor(total / (5 * servers)))));
  const chunks: Chunk[] = [];
  sorted.forEach((t, ti) => {
    if (!Number.isSafeInteger(t.size) || t.size < 0) throw new RangeError(`tensor '${t.name}' has ${t.size} elements`);
    // A tensor of 0 elements still gets a chunk: every worker then pushes the same keys.
    const pieces = Math.max(1, Math.ceil(t.size / chunkSize));
    const base = Math.floor(t.size / pieces);
    const extra = t.size % pieces;
    let offset = 0;
    for (let p = 0; p < pieces; p++) {
      const length = base + (p < extra ? 1 : 0);
      chunks.push({ key: chunks.length, tensor: ti, name: t.name, offset, length, server: 0 });
      offset += length;
    }
  });
  const load = new Array<number>(servers).fill(0);
  const order = chunks.map((c) => c.key).sort((a, b) => chunks[b].length - chunks[a].length || a - b);
  for (const k of order) {
    let best = 0;
    for (let s = 1; s < servers; s++) if (load[s] < load[best]) best = s;
    chunks[k].server = best;
    load[best] += chunks[k].length;
  }
  return { tensors: sorted, chunks, load };
}

/** The chunks server `s` holds, in key order. */
export const chunksOf = (p: Partition, s: number): Chunk[] => p.chunks.filter((c) => c.server === s);
