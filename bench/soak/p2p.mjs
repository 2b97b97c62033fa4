// Point-to-point in the soak: send/recv patterns and all-to-alls, drawn from the shared
// generator like the collectives (so every rank knows what every other sends) and checked exactly.
import { blocks, DTYPES, diff, drawCount, drawDtype, drawValue, fill, logUniform, sum } from './random.mjs';

/** Sends of at most this many bytes travel eagerly, with their announcement (src/p2p/messages.ts). */
const EAGER_BYTES = 64 * 1024;

/** A message's element count: 0, eager (below, at and just over the eager limit), or large up to maxBytes. */
function drawMessageCount(rng, elemBytes, maxBytes) {
  const eager = Math.floor(Math.min(EAGER_BYTES, maxBytes) / elemBytes);
  const r = rng.next();
  if (r < 0.1) return 0;
  if (r < 0.15) return eager + rng.int(2);
  if (r < 0.6 || maxBytes <= EAGER_BYTES) return logUniform(rng, elemBytes, elemBytes, Math.min(EAGER_BYTES, maxBytes));
  return logUniform(rng, elemBytes, EAGER_BYTES + elemBytes, maxBytes);
}

/**
 * Rank order per channel: messages j < j' with the same shift and tag travel the same
 * (src, dst, tag) and match in call order, so `order` (a permutation of 2m calls: sends 0..m-1,
 * then recvs m..2m-1) is rearranged to post each such class's sends, and its recvs, by ascending
 * j. Everything else keeps its random place, so tags and peers interleave freely.
 */
function inMatchingOrder(msgs, order) {
  const m = msgs.length;
  const classes = new Map();
  order.forEach((call, pos) => {
    const key = `${call < m ? 'send' : 'recv'} ${msgs[call % m].k}/${msgs[call % m].tag}`;
    classes.set(key, [...(classes.get(key) ?? []), pos]);
  });
  const out = order.slice();
  for (const positions of classes.values()) {
    const calls = positions.map((pos) => order[pos]).sort((a, b) => a - b);
    positions.forEach((pos, i) => (out[pos] = calls[i]));
  }
  return out;
}

/**
 * A send/recv pattern over n >= 2 ranks: m messages (one, or up to five in flight at once); in
 * message j every rank r sends to (r + k_j) mod n and receives from (r - k_j) mod n with tag_j,
 * a permutation of the ranks. Each rank posts its 2m calls in its own random order, all at once.
 */
export function drawSendrecv(rng, n, maxBytes) {
  const m = rng.next() < 0.5 ? 1 : 2 + rng.int(4);
  const msgs = Array.from({ length: m }, () => {
    const dtype = drawDtype(rng);
    const k = 1 + rng.int(n - 1);
    // Mostly tags 0..2, so that messages share channels; sometimes a large one.
    const tag = rng.next() < 0.8 ? rng.int(3) : rng.int(2 ** 31);
    const count = drawMessageCount(rng, DTYPES[dtype].bytes, maxBytes / m);
    return { k, tag, dtype, count, value: drawValue(rng, dtype, n) };
  });
  const orders = Array.from({ length: n }, () => inMatchingOrder(msgs, rng.permutation(2 * m)));
  const label = `sendrecv ${msgs.map((x) => `+${x.k} tag ${x.tag} ${x.dtype} x${x.count}`).join(', ')}`;
  return { kind: 'sendrecv', tally: 'sendrecv', label, msgs, orders };
}

/** Runs d on comm ({ rank, size, api }, see runCollective) and resolves to { problem, bytes }. */
export async function runSendrecv(comm, d) {
  const { rank, size, api } = comm;
  const m = d.msgs.length;
  const xs = d.msgs.map((msg) => fill(DTYPES[msg.dtype].ctor, msg.count, (i) => msg.value(rank, i)));
  const into = d.msgs.map((msg) => new DTYPES[msg.dtype].ctor(msg.count));
  // Tag 0 is the default: every other message leaves it out.
  const tagged = (j, o) => (d.msgs[j].tag === 0 && j % 2 ? o : { ...o, tag: d.msgs[j].tag });
  const got = await Promise.all(
    d.orders[rank].map((call) => {
      const j = call % m;
      return call < m
        ? api.send(xs[j], tagged(j, { dst: (rank + d.msgs[j].k) % size }))
        : api.recv(into[j], tagged(j, { src: (rank - d.msgs[j].k + size) % size }));
    }),
  );
  return { problem: checkSendrecv(d, rank, size, got, into), bytes: sum(xs.map((x) => x.byteLength)) };
}

/** The first thing wrong with what rank's calls resolved to (got, by call) and received (into, by message). */
function checkSendrecv(d, rank, n, got, into) {
  const m = d.msgs.length;
  for (const [pos, call] of d.orders[rank].entries()) {
    const j = call % m;
    if (call < m) {
      if (got[pos] !== undefined) return `send of message ${j} resolved to ${typeof got[pos]}, not undefined`;
      continue;
    }
    if (got[pos] !== into[j]) return `recv of message ${j} did not resolve to its buffer`;
    const src = (rank - d.msgs[j].k + n) % n;
    const problem = diff(into[j], d.msgs[j].count, (i) => d.msgs[j].value(src, i));
    if (problem) return `message ${j} from rank ${src}: ${problem}`;
  }
  return undefined;
}

/**
 * An all-to-all over n ranks: splits[s][j] elements go from rank s to rank j (0 in a fifth of the
 * pairs, else a handful or log-uniform up to maxBytes / n); one in ten leaves splits out (even).
 */
export function drawAlltoall(rng, n, maxBytes) {
  const dtype = drawDtype(rng);
  const bytes = DTYPES[dtype].bytes;
  const split = () => (rng.next() < 0.2 ? 0 : drawCount(rng, bytes, Math.max(bytes, maxBytes / n), n));
  const even = rng.next() < 0.1;
  const q = even ? split() : 0;
  const splits = Array.from({ length: n }, () => Array.from({ length: n }, () => (even ? q : split())));
  const label = `alltoall ${dtype} ${even ? `even ${q}` : `splits ${JSON.stringify(splits)}`}`;
  return { kind: 'alltoall', tally: 'alltoall', label, dtype, even, splits, value: drawValue(rng, dtype, n) };
}

export async function runAlltoall(comm, d, name) {
  const { rank, size, api } = comm;
  const mine = d.splits[rank];
  const x = fill(DTYPES[d.dtype].ctor, sum(mine), (i) => d.value(rank, i));
  const got = await api.alltoall(x, d.even ? { name } : { splits: mine, name });
  return { problem: checkAlltoall(d, rank, size, got), bytes: x.byteLength };
}

function checkAlltoall(d, rank, n, got) {
  const from = d.splits.map((row) => row[rank]);
  if (!Array.isArray(got?.splits) || got.splits.length !== n || got.splits.some((c, s) => c !== from[s])) {
    return `splits ${JSON.stringify(got?.splits)}, want ${JSON.stringify(from)}`;
  }
  if (!(got.data instanceof DTYPES[d.dtype].ctor)) return `data is a ${got.data?.constructor?.name}, want ${d.dtype}`;
  // What rank s sends here is its block for this rank: its elements from sum(splits[s][0..rank)).
  const start = d.splits.map((row) => sum(row.slice(0, rank)));
  return diff(got.data, sum(from), blocks(from, (s, i) => d.value(s, start[s] + i)));
}
