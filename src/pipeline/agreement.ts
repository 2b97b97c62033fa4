import { RingInvalidArgError, RingMismatchError } from '../errors.js';
import type { StageComm } from './comm.js';

/**
 * Before a pipeline moves any data, its ranks agree: each proposes what it sees (the model's
 * layers, the pipeline's options, the call's parameters) or the problem it found with them, the
 * proposals are all-gathered, and every rank raises the same typed error when one rank found a
 * problem (RING_ERR_INVALID_ARG) or when they differ (RING_ERR_MISMATCH, naming the field and the
 * ranks). A rank whose model or options differ would otherwise send activations of the wrong size
 * and fail one pair of ranks, or hang the others.
 */

/** One layer as the ranks compare it: its class and shapes (names are per process, and may differ). */
export interface LayerDesc {
  name: string;
  cls: string;
  out: Array<number | null>;
  weights: number[][];
}

export interface Proposal {
  /** A problem this rank found with the model, the options or the call; raised on every rank. */
  error?: string;
  model: LayerDesc[];
  options: Record<string, unknown>;
  call: Record<string, unknown>;
}

const layerText = (l: LayerDesc) => `${l.cls} -> [${l.out.join(',')}]${l.weights.length ? ` (weights ${l.weights.map((w) => `[${w.join(',')}]`).join(' ')})` : ''}`;
const comparable = (l: LayerDesc) => JSON.stringify([l.cls, l.out, l.weights]);
const rankList = (rs: number[]) => (rs.length === 1 ? `rank ${rs[0]}` : `ranks ${rs.join(',')}`);

/** Ranks grouped by a value, in order of first appearance. */
function groups<T>(values: T[], key: (v: T) => string): Array<{ ranks: number[]; value: T }> {
  const out = new Map<string, { ranks: number[]; value: T }>();
  values.forEach((v, r) => {
    const k = key(v);
    if (!out.has(k)) out.set(k, { ranks: [], value: v });
    out.get(k)!.ranks.push(r);
  });
  return [...out.values()];
}

/** The error every rank raises for these proposals (by the members' world ranks), or undefined. */
export function disagreement(all: Proposal[], me: number, label: string, worldRank: (r: number) => number = (r) => r): Error | undefined {
  const w = (rs: number[]) => rs.map(worldRank);
  const errs = all.flatMap((p, r) => (p.error !== undefined ? [{ r, e: p.error }] : []));
  if (errs.length > 0) {
    const by = groups(errs, (x) => x.e);
    const text =
      by.length === 1 && errs.length === all.length
        ? by[0].value.e
        : by.map((g) => `${rankList(w(g.ranks.map((i) => errs[i].r)))}: ${g.value.e}`).join('; ');
    return new RingInvalidArgError(`rank ${worldRank(me)}: ${label}: ${text}`, { rank: worldRank(me), ranks: w(errs.map((x) => x.r)), op: label });
  }
  const fail = (field: string, what: string, by: Array<{ ranks: number[] }>, show: (i: number) => string) =>
    new RingMismatchError(
      `rank ${worldRank(me)}: ${label}: ranks disagree on ${what} (${by.map((g, i) => `${rankList(w(g.ranks))}: ${show(i)}`).join('; ')}); every rank must build the same model and call the pipeline with the same arguments`,
      { rank: worldRank(me), ranks: w(by.slice(1).flatMap((g) => g.ranks)), op: label, field },
    );
  const counts = groups(all, (p) => String(p.model.length));
  if (counts.length > 1) {
    return fail('model', 'the model: its number of layers', counts, (i) => `${counts[i].value.model.length} layers (${counts[i].value.model.map((l) => l.cls).join(', ')})`);
  }
  for (let li = 0; li < all[0].model.length; li++) {
    const by = groups(all, (p) => comparable(p.model[li]));
    if (by.length > 1) return fail('model', `the model's layer ${li}`, by, (i) => `'${by[i].value.model[li].name}' ${layerText(by[i].value.model[li])}`);
  }
  for (const part of ['options', 'call'] as const) {
    const keys = [...new Set(all.flatMap((p) => Object.keys(p[part])))].sort();
    for (const k of keys) {
      const by = groups(all, (p) => JSON.stringify(p[part][k]) ?? 'undefined');
      if (by.length > 1) return fail(k, `${part === 'call' ? 'the call argument' : 'the option'} ${k}`, by, (i) => JSON.stringify(by[i].value[part][k]) ?? 'undefined');
    }
  }
  return undefined;
}

/** All-gathers the proposals over `comm` and throws the agreed error, if any. */
export async function agree(comm: StageComm, label: string, mine: Proposal): Promise<Proposal[]> {
  const bytes = new TextEncoder().encode(JSON.stringify(mine));
  const lens = await comm.allgather(Int32Array.of(bytes.length), `ringreduce:${label}:lengths`);
  const joined = await comm.allgather(bytes, `ringreduce:${label}:proposals`);
  const all: Proposal[] = [];
  let o = 0;
  for (const n of lens) {
    all.push(JSON.parse(new TextDecoder().decode(joined.subarray(o, o + n))) as Proposal);
    o += n;
  }
  const e = disagreement(all, comm.rank, label, (r) => comm.worldRank(r));
  if (e) throw e;
  return all;
}
