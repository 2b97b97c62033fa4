import { isCompression, type Compression } from '../compression/registry.js';
import { dtypeByCode, MAX_ELEMENTS } from '../dtypes.js';
import { RingMismatchError, RingProtocolError } from '../errors.js';
import type { ReduceOp } from '../kernels/index.js';
import { peerText, peerValue } from '../peer-text.js';

/**
 * The vocabulary of collectives, in one place: what a collective is as the ranks must agree on it
 * (its descriptor), the kinds and which fields each compares, the reduction ops, and the checks
 * and errors built from them. A new collective is one entry in KINDS (plus its own file and the
 * public API); compressions are listed in compression/registry.ts.
 */

/** What a collective is, as the ranks must agree on it before its data is trusted. */
export type OpDescriptor = {
  kind: Kind;
  /** Reduction op (allreduce, reducescatter); '' otherwise. */
  op: string;
  /** dtype wire code (see dtypes.ts); 0 for collectives that carry no data (barrier). */
  dtype: number;
  /** Element count on this rank. */
  count: number;
  /** User-supplied name ('' if none). */
  name: string;
  /** Broadcast root; -1 otherwise. */
  root: number;
  /** Wire compression (see compression/registry.ts). */
  compression: string;
};

type Field = keyof OpDescriptor;

/**
 * Every collective, and the descriptor fields its ranks must agree on besides kind and name
 * (allgather's and alltoall's counts may differ; only broadcast has a root). `data: false` means it carries no
 * data: its dtype must be 0. `reduces`: it has a reduction op (others carry ''); `compresses`: it
 * may use wire compression (others carry 'none'); `inline`: its descriptor may carry the input.
 */
const KINDS = {
  allreduce: { data: true, reduces: true, compresses: true, inline: true, agree: ['dtype', 'op', 'count', 'compression'] },
  allgather: { data: true, reduces: false, compresses: false, inline: false, agree: ['dtype', 'compression'] },
  broadcast: { data: true, reduces: false, compresses: false, inline: false, agree: ['dtype', 'count', 'root', 'compression'] },
  reducescatter: { data: true, reduces: true, compresses: false, inline: false, agree: ['dtype', 'op', 'count', 'compression'] },
  barrier: { data: false, reduces: false, compresses: false, inline: false, agree: [] },
  alltoall: { data: true, reduces: false, compresses: false, inline: true, agree: ['dtype', 'compression'] },
} as const satisfies Record<string, { data: boolean; reduces: boolean; compresses: boolean; inline: boolean; agree: readonly Field[] }>;

/**
 * The longest name a collective may have, in characters: a descriptor visits every rank, and
 * those of up to 1,024 operations ahead may wait at a rank that has not reached them.
 */
export const MAX_NAME_CHARS = 1024;

/**
 * Input bytes that may ride inside a descriptor (collectives/eager.ts, alltoall.ts): small inputs
 * up to this, and all-to-all's splits (4 bytes per rank) besides.
 */
export const INLINE_BYTES = 16 * 1024;
export const inlineCap = (size: number): number => INLINE_BYTES + 4 * size;

export type Kind = keyof typeof KINDS;

function isKind(v: unknown): v is Kind {
  return typeof v === 'string' && Object.hasOwn(KINDS, v);
}

const KIND_FIELDS: ReadonlyMap<unknown, ReadonlySet<Field>> = new Map(
  Object.entries(KINDS).map(([k, v]) => [k, new Set<Field>(['kind', 'name', ...v.agree])]),
);

export const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'average', 'min', 'max', 'product'];

/** Descriptor fields in the order mismatches are reported, and how a mismatch names them. */
const FIELDS: ReadonlyArray<{ field: Field; label: string }> = [
  { field: 'kind', label: 'collective' },
  { field: 'name', label: 'name' },
  { field: 'dtype', label: 'dtype' },
  { field: 'op', label: 'reduction op' },
  { field: 'count', label: 'element count' },
  { field: 'root', label: 'root' },
  { field: 'compression', label: 'compression' },
];

/** Whether ranks running a `kind` must agree on `field`. */
function compared(kind: string, field: Field): boolean {
  return KIND_FIELDS.get(kind)?.has(field) ?? field === 'kind';
}

/** A descriptor with the fields a kind does not use at their neutral values. */
export function descriptor(
  kind: Kind,
  f: { dtype?: number; count?: number; name?: string; op?: string; root?: number; compression?: Compression } = {},
): OpDescriptor {
  return { kind, op: f.op ?? '', dtype: f.dtype ?? 0, count: f.count ?? 0, name: f.name ?? '', root: f.root ?? -1, compression: f.compression ?? 'none' };
}

/** "allreduce #3 'grad/w'": how errors name an operation (a name from a peer is shown safely: peer-text.ts). */
export function label(d: OpDescriptor, seq: number): string {
  return `${d.kind} #${seq}${d.name ? ` '${peerText(d.name)}'` : ''}`;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);

/**
 * Checks a descriptor received from `from` in a group of `size` ranks: a malformed one is a
 * protocol error, naming the field and (safely: peer-text.ts) the value. Every field is checked
 * for its type and its range, and against what the kind admits — the reduction ops and the
 * compression only where the kind has them, the neutral values elsewhere, a count no array can
 * exceed (MAX_ELEMENTS: no honest rank sends more), a root inside the group, a name of at most
 * MAX_NAME_CHARS — so that no value a peer can send makes a rank allocate, index or print beyond
 * bounds. Returns a fresh descriptor holding only the known fields, so nothing else the peer put
 * in the object travels further.
 */
export function validateDescriptor(d: Record<string, unknown>, from: string, size: number): OpDescriptor {
  const bad = (what: string) => new RingProtocolError(`malformed 'desc' message from ${from}: ${what}`);
  if (!isKind(d.kind)) throw bad(`collective ${peerValue(d.kind)}`);
  const k = KINDS[d.kind];
  if (!(k.reduces ? REDUCE_OPS.includes(d.op as ReduceOp) : d.op === '')) throw bad(`reduction op ${peerValue(d.op)} for ${d.kind}`);
  if (!(k.data ? isInt(d.dtype) && dtypeByCode(d.dtype) !== undefined : d.dtype === 0)) throw bad(`dtype code ${peerValue(d.dtype)} for ${d.kind}`);
  if (!isInt(d.count) || d.count < 0 || d.count > MAX_ELEMENTS || (!k.data && d.count !== 0)) {
    throw bad(`element count ${peerValue(d.count)} for ${d.kind} (at most ${k.data ? MAX_ELEMENTS : 0})`);
  }
  if (!isInt(d.root) || (d.kind === 'broadcast' ? d.root < 0 || d.root >= size : d.root !== -1)) throw bad(`root ${peerValue(d.root)} for ${d.kind} in a group of ${size}`);
  if (typeof d.name !== 'string' || d.name.length > MAX_NAME_CHARS) {
    throw bad(typeof d.name === 'string' ? `name of ${d.name.length} characters (at most ${MAX_NAME_CHARS})` : `name ${peerValue(d.name)}`);
  }
  if (!isCompression(d.compression) || (d.compression !== 'none' && !(k.compresses && d.dtype === 1))) {
    throw bad(`compression ${peerValue(d.compression)} for ${d.kind} of dtype code ${d.dtype}`);
  }
  return { kind: d.kind, op: d.op as string, dtype: d.dtype as number, count: d.count, name: d.name, root: d.root, compression: d.compression };
}

/** Checks the input a descriptor of `kind` carries (see Collective.inline): only kinds that inline, at most inlineCap bytes. */
export function validateInline(p: Uint8Array | undefined, kind: Kind, from: string, size: number): void {
  if (p === undefined) return;
  if (!KINDS[kind].inline || p.byteLength > inlineCap(size)) {
    throw new RingProtocolError(`malformed 'desc' message from ${from}: ${p.byteLength} inline bytes for ${kind} (at most ${KINDS[kind].inline ? inlineCap(size) : 0})`);
  }
}

/** Equal in every field (the common case, checked before looking for a mismatch field by field). */
export function sameDescriptor(a: OpDescriptor, b: OpDescriptor): boolean {
  return (
    a === b ||
    (a.kind === b.kind && a.name === b.name && a.dtype === b.dtype && a.op === b.op && a.count === b.count && a.root === b.root && a.compression === b.compression)
  );
}

/** The first field (in FIELDS order) on which two descriptors disagree, or undefined. */
export function firstDifference(a: OpDescriptor, b: OpDescriptor): Field | undefined {
  for (const f of FIELDS) {
    if (!compared(a.kind, f.field)) continue;
    if (a[f.field] !== b[f.field]) return f.field;
  }
  return undefined;
}

function showValue(field: Field, v: unknown): string {
  if (field === 'dtype') return dtypeByCode(v as number)?.name ?? `dtype#${String(v)}`;
  return peerValue(v);
}

/**
 * The same error on every rank, from every rank's descriptor (indexed by rank): the first field
 * (in FIELDS order) on which ranks disagree, with which ranks hold which value. `rank` is this
 * rank, `own` its descriptor; undefined if all agree.
 */
export function mismatchError(descs: readonly OpDescriptor[], rank: number, own: OpDescriptor, seq: number): RingMismatchError | undefined {
  const sameKind = descs.every((d) => d.kind === descs[0].kind);
  for (const f of FIELDS) {
    if (f.field !== 'kind' && !(sameKind && compared(descs[0].kind, f.field))) continue;
    const groups = new Map<unknown, number[]>();
    descs.forEach((d, r) => {
      const v = d[f.field];
      if (!groups.has(v)) groups.set(v, []);
      groups.get(v)!.push(r);
    });
    if (groups.size === 1) continue;
    const parts = [...groups].map(([v, ranks]) => `rank${ranks.length > 1 ? 's' : ''} ${ranks.join(',')}: ${showValue(f.field, v)}`);
    const odd = [...groups.values()].slice(1).flat();
    return new RingMismatchError(`rank ${rank}: ${label(own, seq)}: ranks disagree on the ${f.label} (${parts.join('; ')})`, {
      rank,
      ranks: odd,
      op: own.kind,
      seq,
      field: f.field,
    });
  }
  return undefined;
}
