/**
 * Negotiation: which submitted gradient groups every rank has, in what order to reduce them, and
 * which disagree. A pure function of every rank's pending list, so every rank — given the same
 * all-gathered lists — reaches the same decision without a coordinator.
 *
 * A group is what one call submits together (one optimizer step's gradients). Groups are matched
 * across ranks by their tensor names, not by when they were submitted, so ranks may submit in
 * different orders. Rank 0's order decides the order of execution.
 */
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

/** The exact identity of a group: equal keys reduce together. */
export function groupKey(g: GroupMeta): string {
  return JSON.stringify([g.tensors.map((t) => [t.name, t.shape]), g.op, g.compression, g.prescale, g.postscale]);
}

function describe(field: string, byRank: Map<string, number[]>): string {
  return [...byRank].map(([v, ranks]) => `rank${ranks.length > 1 ? 's' : ''} ${ranks.join(',')}: ${v}`).join('; ') + ` (${field})`;
}

/** Explains how the groups `gs` (one per rank) differ. */
function difference(gs: GroupMeta[]): { message: string; field: string; ranks: number[] } {
  const names = new Set(gs.flatMap((g) => g.tensors.map((t) => t.name)));
  for (const name of [...names].sort()) {
    const has = gs.map((g) => g.tensors.find((t) => t.name === name));
    const missing = has.map((t, r) => (t ? -1 : r)).filter((r) => r >= 0);
    if (missing.length) {
      const present = has.map((t, r) => (t ? r : -1)).filter((r) => r >= 0);
      return {
        field: 'tensors',
        ranks: present.length <= missing.length ? present : missing, // the minority: the ranks with the odd one out
        message: `tensor '${name}' is submitted by rank${present.length > 1 ? 's' : ''} ${present.join(',')} but not by rank${missing.length > 1 ? 's' : ''} ${missing.join(',')}`,
      };
    }
    const shapes = new Map<string, number[]>();
    has.forEach((t, r) => shapes.set(shapeStr(t!.shape), [...(shapes.get(shapeStr(t!.shape)) ?? []), r]));
    if (shapes.size > 1) {
      return { field: 'shape', ranks: [...shapes.values()].slice(1).flat(), message: `tensor '${name}' has different shapes: ${describe('shape', shapes)}` };
    }
  }
  for (const field of ['op', 'compression', 'prescale', 'postscale'] as const) {
    const vals = new Map<string, number[]>();
    gs.forEach((g, r) => vals.set(String(g[field]), [...(vals.get(String(g[field])) ?? []), r]));
    if (vals.size > 1) return { field, ranks: [...vals.values()].slice(1).flat(), message: `ranks disagree on ${describe(field, vals)}` };
  }
  return { field: 'unknown', ranks: [], message: 'groups differ' };
}

export function decide(lists: GroupMeta[][]): Decision {
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
    else decision.errors.push({ indices, ...difference(indices.map((j, r) => lists[r][j])) });
  });
  return decision;
}
