import { parentPort, type MessagePort } from 'node:worker_threads';
import { Packr } from 'msgpackr';
import { RingError, RingMismatchError, RingProtocolError, serializeError, type SerializedRingError } from '../errors.js';
import type { RingGroup } from '../group.js';
import { stderrLogger } from '../logger.js';
import { scaleInPlace } from '../kernels/index.js';
import { formRing } from '../rendezvous/ring.js';
import type { Compression } from '../compression/registry.js';
import type { EngineOptions, FromWorker, GroupEntry, ToWorker } from './messages.js';
import { decide, validateLists, type GroupMeta } from './plan.js';
import { checkMsgpack } from '../transport/msgpack-check.js';

/**
 * The comm thread: owns the engine's ring and turns submitted gradient groups into fused ring
 * all-reduces.
 *
 * Each negotiation round all-gathers every rank's list of pending groups; `decide` (a pure
 * function, so all ranks agree) matches them by tensor names, and matched groups are packed into
 * fusion buffers of at most `fusionBytes` and reduced. A rank takes part in a round when it has
 * pending groups and either something new was submitted or the previous round made progress —
 * so rounds never spin, and a rank that never submits shows up in the stall warning instead.
 */
interface Pending {
  id: number;
  buffer: SharedArrayBuffer;
  control: Int32Array;
  entries: GroupEntry[];
  meta: GroupMeta;
  sync: boolean;
  submittedAt: number;
  warned: boolean;
}

const port = parentPort!;
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });
let syncPort: MessagePort | undefined;
let ring: RingGroup | undefined;
let options: EngineOptions;
const pending: Pending[] = [];
let newSinceRound = false;
let lastRoundProgressed = false;
let inRound = false;
let round = 0;
/** Which ranks had each tensor pending in the last round (for stall warnings). */
let lastSeen = new Map<string, number[]>();
let fusion = new Float32Array(0);
let fatal: SerializedRingError | undefined;

function reply(p: Pending, error?: SerializedRingError): void {
  if (Atomics.load(p.control, 0) !== 0) return; // answered already
  // Post first, then wake: a main thread blocked in Atomics.wait reads the reply straight off the port.
  const msg: FromWorker = { type: 'done', id: p.id, error };
  (p.sync ? syncPort! : port).postMessage(msg);
  Atomics.store(p.control, 0, error ? 2 : 1);
  Atomics.notify(p.control, 0);
}

function fail(e: unknown): void {
  const err = e instanceof RingError ? serializeError(e) : { code: 'RING_ERR_INTERNAL' as const, message: String((e as Error)?.stack ?? e), details: {} };
  fatal = err;
  for (const p of pending.splice(0)) reply(p, err);
  port.postMessage({ type: 'fatal', error: err } satisfies FromWorker);
}

function kick(): void {
  if (inRound || fatal || !ring || pending.length === 0) return;
  if (!newSinceRound && !lastRoundProgressed) return;
  inRound = true;
  newSinceRound = false;
  negotiate().then(
    () => {
      inRound = false;
      kick();
    },
    (e) => {
      inRound = false;
      fail(e);
    },
  );
}

async function negotiate(): Promise<void> {
  const mine = pending.slice();
  round++;
  const encoded = packr.pack(mine.map((p) => p.meta));
  const gathered = await ring!.allgather(new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength), { name: 'engine:negotiate' });
  const lists = splitLists(gathered);
  lastSeen = new Map();
  lists.forEach((l, r) => l.forEach((g) => g.tensors.forEach((t) => lastSeen.set(t.name, [...(lastSeen.get(t.name) ?? []), r]))));
  const d = decide(lists);
  lastRoundProgressed = d.matched.length > 0 || d.errors.length > 0;
  const me = options.rank;
  const done = new Set<Pending>();
  for (const err of d.errors) {
    const p = mine[err.indices[me]];
    const e = new RingMismatchError(`rank ${me}: gradient negotiation round ${round}: ${err.message}`, {
      rank: me,
      ranks: err.ranks,
      op: 'allreduce',
      field: err.field,
    });
    reply(p, serializeError(e));
    done.add(p);
  }
  // Fuse matched groups (in rank 0's order) into buffers of at most fusionBytes.
  let batch: Pending[] = [];
  let bytes = 0;
  const flush = async () => {
    if (batch.length) await reduceBatch(batch);
    batch = [];
    bytes = 0;
  };
  for (const idx of d.matched) {
    const p = mine[idx[me]];
    const b = p.entries.reduce((s, e) => s + e.count * 4, 0);
    const compatible = batch.length === 0 || sameReduction(batch[0].meta, p.meta);
    if (!compatible || (bytes > 0 && bytes + b > options.fusionBytes)) await flush();
    batch.push(p);
    bytes += b;
    if (options.fusionBytes === 0) await flush();
  }
  await flush();
  for (const p of mine) if (done.has(p) || p.control[0] !== 0) pending.splice(pending.indexOf(p), 1);
}

function sameReduction(a: GroupMeta, b: GroupMeta): boolean {
  return a.op === b.op && a.compression === b.compression && a.prescale === b.prescale && a.postscale === b.postscale;
}

/**
 * msgpack values are self-delimiting: the all-gathered bytes decode to one list per rank. They
 * come from the other ranks, so they are checked as every control message is: plain data only
 * (msgpack-check.ts) before decoding, then field by field (validateLists).
 */
function splitLists(bytes: Uint8Array): GroupMeta[][] {
  // Every value takes a byte at least: the walk is linear in the bytes, whatever their count.
  const problem = checkMsgpack(bytes, 0, options.size, bytes.byteLength);
  if (problem) throw new RingProtocolError(`rank ${options.rank}: protocol error: gradient negotiation: the ranks' lists are malformed: ${problem}`, { rank: options.rank });
  const out = packr.unpackMultiple(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)) as unknown[];
  if (out.length !== options.size) throw new RingProtocolError(`negotiation: expected ${options.size} lists, got ${out.length}`);
  return validateLists(out, options.rank);
}

async function reduceBatch(batch: Pending[]): Promise<void> {
  const meta = batch[0].meta;
  const op = meta.op === 'average' ? 'average' : 'sum';
  let data: Float32Array;
  const single = batch.length === 1;
  if (single) {
    const p = batch[0];
    const total = p.entries.reduce((s, e) => s + e.count, 0);
    data = new Float32Array(p.buffer, 0, total);
  } else {
    const total = batch.reduce((s, p) => s + p.entries.reduce((t, e) => t + e.count, 0), 0);
    if (fusion.length < total) fusion = new Float32Array(total);
    data = fusion.subarray(0, total);
    let o = 0;
    for (const p of batch) {
      const src = new Float32Array(p.buffer, 0, p.entries.reduce((t, e) => t + e.count, 0));
      data.set(src, o);
      o += src.length;
    }
  }
  if (meta.prescale !== 1) scaleInPlace(data, meta.prescale);
  try {
    await ring!.allreduce(data, { op, inPlace: true, name: 'engine:fused', compression: meta.compression as Compression });
  } catch (e) {
    const err = e instanceof RingError ? serializeError(e) : serializeError(new RingMismatchError(String(e), {}));
    for (const p of batch) reply(p, err);
    throw e;
  }
  if (meta.postscale !== 1) scaleInPlace(data, meta.postscale);
  if (!single) {
    let o = 0;
    for (const p of batch) {
      const dst = new Float32Array(p.buffer, 0, p.entries.reduce((t, e) => t + e.count, 0));
      dst.set(data.subarray(o, o + dst.length));
      o += dst.length;
    }
  }
  for (const p of batch) reply(p);
}

function checkStalls(): void {
  const now = Date.now();
  for (const p of pending) {
    if (p.warned || now - p.submittedAt < options.stallWarningMs) continue;
    p.warned = true;
    const names = p.meta.tensors.map((t) => t.name);
    const missing = new Set<number>();
    for (const n of names) {
      const seen = lastSeen.get(n) ?? [options.rank];
      for (let r = 0; r < options.size; r++) if (!seen.includes(r)) missing.add(r);
    }
    stderrLogger.warn(
      `rank ${options.rank}: stall: ${names.length} tensor(s) submitted ${((now - p.submittedAt) / 1000).toFixed(0)} s ago are still waiting ` +
        `(${names.slice(0, 5).join(', ')}${names.length > 5 ? ', ...' : ''}); ` +
        (missing.size
          ? `as of negotiation round ${round}, rank(s) ${[...missing].sort((a, b) => a - b).join(', ')} had not submitted them`
          : `every rank had submitted them as of round ${round}; waiting for a rank to join the next round`),
    );
  }
}

port.on('message', async (m: ToWorker | { type: 'syncPort'; port: MessagePort }) => {
  if (m.type === 'syncPort') {
    syncPort = m.port;
    return;
  }
  if (m.type === 'init') {
    options = m.options;
    try {
      ring = await formRing(
        {
          ...options,
          source: 'options',
          hostStore: false,
          tokenIsDefault: false,
          logger: stderrLogger,
        },
        'engine',
      );
      setInterval(checkStalls, Math.min(1000, Math.max(10, options.stallWarningMs / 4))).unref();
      port.postMessage({ type: 'ready' } satisfies FromWorker);
      kick();
    } catch (e) {
      fail(e);
    }
  } else if (m.type === 'group') {
    const p: Pending = { ...m, control: new Int32Array(m.control), submittedAt: Date.now(), warned: false };
    if (fatal) return reply(p, fatal);
    pending.push(p);
    newSinceRound = true;
    kick();
  } else if (m.type === 'shutdown') {
    await ring?.shutdown().catch(() => {});
    port.postMessage({ type: 'closed' } satisfies FromWorker);
  }
});
