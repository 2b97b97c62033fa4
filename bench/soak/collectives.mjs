// The ring collectives of the soak: draw one (every field from the shared generator), run it on a
// communicator (the world or a group), check its result exactly against the float64 reference.
import { blocks, DTYPES, diff, drawCount, drawDtype, drawValue, fill, sum } from './random.mjs';

export const COLLECTIVES = ['allreduce', 'allgather', 'broadcast', 'reducescatter', 'barrier'];
const REDUCE_OPS = ['sum', 'min', 'max', 'product', 'average'];

/** A collective of `kind` over n ranks; value(r, i) is rank r's i-th input element. */
export function drawCollective(rng, kind, n, maxBytes) {
  const op = kind === 'allreduce' || kind === 'reducescatter' ? rng.pick(REDUCE_OPS) : '';
  let compression = 'none';
  let dtype = drawDtype(rng);
  if (kind === 'allreduce' && rng.next() < 0.5) {
    compression = rng.pick(['fp16', 'bf16']);
    dtype = 'float32';
  }
  const dt = DTYPES[dtype];
  const counts = Array.from({ length: n }, () => drawCount(rng, dt.bytes, kind === 'allgather' ? Math.max(8, maxBytes / n) : maxBytes, n));
  const root = rng.int(n);
  const value = drawValue(rng, dtype, n, op, compression);
  const label = `${kind}${op ? ` ${op}` : ''} ${dtype}${compression !== 'none' ? ` ${compression}` : ''}, count ${counts[0]}`;
  const tally = kind === 'allreduce' && compression !== 'none' ? `allreduce ${compression}` : kind;
  return { kind, tally, label, op, dtype, compression, counts, count: counts[0], root, value };
}

/** The exact reduction of element i over all ranks (float64; exact by construction). */
function reduced(op, n, value, i) {
  let acc = value(0, i);
  for (let r = 1; r < n; r++) {
    const v = value(r, i);
    if (op === 'sum' || op === 'average') acc += v;
    else if (op === 'min') acc = Math.min(acc, v);
    else if (op === 'max') acc = Math.max(acc, v);
    else acc *= v;
  }
  return op === 'average' ? acc / n : acc;
}

/** Returns undefined if `got` is exactly right, else a description of the first difference. */
function check(d, rank, n, got) {
  if (d.kind === 'barrier') return got === undefined ? undefined : 'barrier returned a value';
  if (d.kind === 'broadcast') return diff(got, d.count, (i) => d.value(d.root, i));
  if (d.kind === 'allgather') return diff(got, sum(d.counts), blocks(d.counts, d.value));
  let offset = 0;
  let length = d.count;
  if (d.kind === 'reducescatter') {
    const base = Math.floor(d.count / n);
    const rem = d.count % n;
    offset = rank * base + Math.min(rank, rem);
    length = base + (rank < rem ? 1 : 0);
  }
  return diff(got, length, (i) => reduced(d.op, n, d.value, offset + i));
}

/**
 * Runs d on `comm` ({ rank, size, api }: api is the ringreduce module or a RingGroup) and
 * resolves to { problem, bytes }: the first difference (or undefined) and the input's size.
 */
export async function runCollective(comm, d, name) {
  const { rank, size, api } = comm;
  const mine = d.kind === 'allgather' ? d.counts[rank] : d.count;
  const x = d.kind === 'barrier' ? undefined : fill(DTYPES[d.dtype].ctor, mine, (i) => d.value(rank, i));
  let got;
  if (d.kind === 'allreduce') got = await api.allreduce(x, { op: d.op, compression: d.compression, name });
  else if (d.kind === 'reducescatter') got = await api.reducescatter(x, { op: d.op, name });
  else if (d.kind === 'allgather') got = await api.allgather(x, { name });
  else if (d.kind === 'broadcast') got = await api.broadcast(x, { root: d.root, name });
  else got = await api.barrier({ name });
  return { problem: check(d, rank, size, got), bytes: x ? x.byteLength : 0 };
}
