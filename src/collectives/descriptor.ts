import { isCompression, type Compression } from '../compression/registry.js';
import { dtypeByCode } from '../dtypes.js';
import { RingMismatchError, RingProtocolError } from '../errors.js';
import type { ReduceOp } from '../kernels/index.js';

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
 * data: its dtype must be 0.
 */
const KINDS = {
  allreduce: { data: true, agree: ['dtype', 'op', 'count', 'compression'] },
  allgather: { data: true, agree: ['dtype', 'compression'] },
  broadcast: { data: true, agree: ['dtype', 'count', 'root', 'compression'] },
  reducescatter: { data: true, agree: ['dtype', 'op', 'count', 'compression'] },
  barrier: { data: false, agree: [] },
  alltoall: { data: true, agree: ['dtype', 'compression'] },
} as const satisfies Record<string, { data: boolean; agree: readonly Field[] }>;

export type Kind = keyof typeof KINDS;

function isKind(v: unknown): v is Kind {
  return typeof v === 'string' && Object.hasOwn(KINDS, v);
}

const KIND_FIELDS: ReadonlyMap<unknown, ReadonlySet<Field>> = new Map(
  Object.entries(KINDS).map(([k, v]) => [k, new Set<Field>(['kind', 'name', ...v.agree])]),
);

export const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'average', 'min', 'max', 'product'];
/** What a descriptor may carry as its op: a reduction, or '' for collectives without one. */
const OPS: ReadonlySet<unknown> = new Set(['', ...REDUCE_OPS]);

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

/** "allreduce #3 'grad/w'": how errors name an operation. */
export function label(d: OpDescriptor, seq: number): string {
  return `${d.kind} #${seq}${d.name ? ` '${d.name}'` : ''}`;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);

/**
 * Checks a descriptor received from `from`: a malformed one is a protocol error. Returns a fresh
 * descriptor holding only the known fields, each of the right type and range, so nothing else the
 * peer put in the object travels further.
 */
export function validateDescriptor(d: Record<string, unknown>, from: string): OpDescriptor {
  const bad = (what: string) => new RingProtocolError(`malformed 'desc' message from ${from}: ${what}`);
  if (!isKind(d.kind)) throw bad(`collective ${JSON.stringify(d.kind)}`);
  if (!OPS.has(d.op)) throw bad(`reduction op ${JSON.stringify(d.op)}`);
  if (!(KINDS[d.kind].data ? isInt(d.dtype) && dtypeByCode(d.dtype) !== undefined : d.dtype === 0)) throw bad(`dtype code ${String(d.dtype)}`);
  if (!isInt(d.count) || d.count < 0) throw bad(`element count ${String(d.count)}`);
  if (!isInt(d.root) || d.root < -1) throw bad(`root ${String(d.root)}`);
  if (typeof d.name !== 'string') throw bad('name');
  if (!isCompression(d.compression)) throw bad(`compression ${JSON.stringify(d.compression)}`);
  return { kind: d.kind, op: d.op as string, dtype: d.dtype as number, count: d.count, name: d.name, root: d.root, compression: d.compression };
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
  if (typeof v === 'string') return `'${v}'`;
  return String(v);
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
