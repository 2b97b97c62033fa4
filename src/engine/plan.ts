/**
 * Negotiation: which submitted gradient groups every rank has, in what order to reduce them, and
 * which disagree. A pure function of every rank's pending list, so every rank — given the same
 * all-gathered lists — reaches the same decision without a coordinator.
 *
 * A group is what one call submits together (one optimizer step's gradients). Groups are matched
 * across ranks by their tensor names, not by when they were submitted, so ranks may submit in
 * different orders. Rank 0's order decides the order of execution.
 */
import { isCompression } from '../compression/registry.js';
import { RingProtocolError } from '../errors.js';
import { peerText, peerValue } from '../peer-text.js';

/**
 * The order of tensors in a group's shared buffer, and in a parameter-server job's: by name, in
 * UTF-16 code-unit order (not the locale's), so that every rank and thread lays them out alike.
 */
export const byName = (a: { name: string }, b: { name: string }): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export interface TensorMeta {
  name: string;
  shape: number[];
}

export interface GroupMeta {
  /** Tensors sorted by name. */
  tensors: TensorMeta[];
  op: string;
  compression: string;
  prescale: number;
  postscale: number;
}

export interface Decision {
  /** Matched groups in execution order: index of the group in each rank's list. */
  matched: number[][];
  /** Groups that overlap across ranks but disagree: each rank's index (or -1) and the reason. */
  errors: Array<{ indices: number[]; message: string; field: string; ranks: number[] }>;
}

const shapeStr = (s: number[]) => `[${s.join(',')}]`;

/** Bounds of what a rank's pending list may hold (far beyond any model). */
const MAX_GROUPS = 4096;
const MAX_TENSORS = 1 << 16;
const MAX_TENSOR_NAME = 4096;
const MAX_RANK = 32;

/**
 * Checks the lists of pending groups that came from the other ranks (decoded MessagePack, one per
 * rank, in rank order): every field of the right type and within bounds, or a protocol error
 * naming the rank. Returns fresh lists of the known fields only.
 */
export function validateLists(lists: unknown[], me: number): GroupMeta[][] {
  return lists.map((list, r) => {
    const bad = (what: string) =>
      new RingProtocolError(`rank ${me}: protocol error: rank ${r} sent a malformed gradient negotiation list: ${what}`, { rank: me, ranks: [r] });
    if (!Array.isArray(list) || list.length > MAX_GROUPS) throw bad(`list ${peerValue(list)}`);
    return list.map((g: unknown): GroupMeta => {
      if (g === null || typeof g !== 'object' || Array.isArray(g)) throw bad(`group ${peerValue(g)}`);
      const x = g as Record<string, unknown>;
      if (!Array.isArray(x.tensors) || x.tensors.length > MAX_TENSORS) throw bad(`tensors ${peerValue(x.tensors)}`);
      const tensors = x.tensors.map((t: unknown): TensorMeta => {
        const y = (t ?? {}) as Record<string, unknown>;
        if (typeof y.name !== 'string' || y.name.length > MAX_TENSOR_NAME) throw bad(`tensor name ${peerValue(y.name)}`);
        const shape = y.shape;
        if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
          throw bad(`shape ${peerValue(shape)} of tensor '${peerText(y.name)}'`);
        }
        return { name: y.name, shape: (shape as number[]).slice() };
      });
      if (x.op !== 'sum' && x.op !== 'average') throw bad(`op ${peerValue(x.op)}`);
      if (!isCompression(x.compression)) throw bad(`compression ${peerValue(x.compression)}`);
      for (const f of ['prescale', 'postscale'] as const) {
        if (typeof x[f] !== 'number' || !Number.isFinite(x[f])) throw bad(`${f} ${peerValue(x[f])}`);
      }
      return { tensors, op: x.op, compression: x.compression, prescale: x.prescale as number, postscale: x.postscale as number };
    });
  });
}

/** The exact identity of a group: equal keys reduce together. */
export function groupKey(g: GroupMeta): string {
  return JSON.stringify([g.tensors.map((t) => [t.name, t.shape]), g.op, g.compression, g.prescale, g.postscale]);
}

function describe(field: string, byRank: Map<string, number[]>): string {
  return [...byRank].map(([v, ranks]) => `rank${ranks.length > 1 ? 's' : ''} ${ranks.join(',')}: ${peerText(v)}`).join('; ') + ` (${field})`;
}

/** Explains how the groups `gs` (one per rank) differ; ranks named by `rankOf` (see decide). */
function difference(gs: GroupMeta[], rankOf: (r: number) => number): { message: string; field: string; ranks: number[] } {
  const names = new Set(gs.flatMap((g) => g.tensors.map((t) => t.name)));
  for (const name of [...names].sort()) {
    const has = gs.map((g) => g.tensors.find((t) => t.name === name));
    const missing = has.map((t, r) => (t ? -1 : rankOf(r))).filter((r) => r >= 0);
    if (missing.length) {
      const present = has.map((t, r) => (t ? rankOf(r) : -1)).filter((r) => r >= 0);
      return {
        field: 'tensors',
        ranks: present.length <= missing.length ? present : missing, // the minority: the ranks with the odd one out
        message: `tensor '${peerText(name)}' is submitted by rank${present.length > 1 ? 's' : ''} ${present.join(',')} but not by rank${missing.length > 1 ? 's' : ''} ${missing.join(',')}`,
      };
    }
    const shapes = new Map<string, number[]>();
    has.forEach((t, r) => shapes.set(shapeStr(t!.shape), [...(shapes.get(shapeStr(t!.shape)) ?? []), rankOf(r)]));
    if (shapes.size > 1) {
      return { field: 'shape', ranks: [...shapes.values()].slice(1).flat(), message: `tensor '${peerText(name)}' has different shapes: ${describe('shape', shapes)}` };
    }
  }
  for (const field of ['op', 'compression', 'prescale', 'postscale'] as const) {
    const vals = new Map<string, number[]>();
    gs.forEach((g, r) => vals.set(String(g[field]), [...(vals.get(String(g[field])) ?? []), rankOf(r)]));
    if (vals.size > 1) return { field, ranks: [...vals.values()].slice(1).flat(), message: `ranks disagree on ${describe(field, vals)}` };
  }
  return { field: 'unknown', ranks: [], message: 'groups differ' };
}

/**
 * `lists[r]` is rank r's pending list, r in the reducing set's own numbering; messages and
 * `errors[].ranks` name ranks by `rankOf(r)` (a process set's members by their world rank).
 */
export function decide(lists: GroupMeta[][], rankOf: (r: number) => number = (r) => r): Decision {
  const n = lists.length;
  const consumed = lists.map(() => new Set<number>());
  const keys = lists.map((l) => l.map(groupKey));
  const decision: Decision = { matched: [], errors: [] };
  lists[0].forEach((g, i) => {
    if (consumed[0].has(i)) return;
    const names = new Set(g.tensors.map((t) => t.name));
    const indices = [i];
    for (let r = 1; r < n; r++) {
      const j = lists[r].findIndex((h, k) => !consumed[r].has(k) && h.tensors.some((t) => names.has(t.name)));
      indices.push(j);
    }
    // Not submitted everywhere yet: wait for the next round.
    if (indices.some((j) => j < 0)) return;
    indices.forEach((j, r) => consumed[r].add(j));
    if (indices.every((j, r) => keys[r][j] === keys[0][i])) decision.matched.push(indices);
    else decision.errors.push({ indices, ...difference(indices.map((j, r) => lists[r][j]), rankOf) });
  });
  return decision;
}
