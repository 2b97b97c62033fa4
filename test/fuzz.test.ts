import { EventEmitter } from 'node:events';
import { createHmac } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { Communicator } from '../src/collectives/communicator.js';
import type { NumericArray } from '../src/dtypes.js';
import { RingError } from '../src/errors.js';
import { RingGroup } from '../src/group.js';
import { silentLogger } from '../src/logger.js';
import { clientHandshake, serverHandshake } from '../src/transport/ws/auth.js';
import { Inbox } from '../src/transport/ws/inbox.js';
import { MessageLink, validateControl, type Link, type LinkHandlers } from '../src/transport/link.js';
import { memoryLinkPair } from '../src/transport/memory.js';
import type { LinkControlMessage } from '../src/transport/messages.js';
import { validateDescriptor, type OpDescriptor } from '../src/collectives/descriptor.js';
import { DATA_HEADER_BYTES, decodeMessage, encodeControl, encodeData, encodeDataHeader, KIND_DATA_HEADER, type DataHeader } from '../src/transport/wire.js';
import { DEEP_ARRAY, Entries, HOSTILE, HUGE_ARRAY, mp, mutateBytes, mutateObject, prng, prototypeGuard, type Rng } from './helpers/hostile.js';
import { firstDiff, sameBytes } from './helpers/reference.js';

const control = (m: unknown) => Buffer.concat([Buffer.from([0]), mp(m)]);

/**
 * Unit-level fuzzing of everything that parses bytes from a peer: the data-frame header, control
 * messages and their validation, the communicator's handling of frames and control messages, and
 * the authentication handshake. Thousands of mutations of valid traffic per run, from one seed
 * (printed; FUZZ_SEED=<n> reproduces a run, and every failure names its case number).
 *
 * Every input must end in one of: accepted (and then exactly right), a typed RingError that names
 * the peer, or — for traffic that merely stops short — a timeout. Never a stray exception, a hang,
 * or a change to Object.prototype.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
console.log(`fuzz seed ${SEED} (rerun with FUZZ_SEED=${SEED})`);
const caseRng = (suite: number, i: number) => prng((SEED * 1_000_003 + suite * 7919 + i * 0x9e3779b9) >>> 0);
const guard = prototypeGuard();
afterAll(() => guard.check());

const PEER = 'rank 0 (fuzz peer)';

/** The valid messages of every protocol, to be mutated. */
const desc = (seq: number, origin: number, d: Partial<Record<string, unknown>> = {}) => ({
  t: 'desc',
  seq,
  origin,
  d: { kind: 'allreduce', op: 'sum', dtype: 1, count: 50, name: 'w', root: -1, compression: 'none', ...d },
});
const VALID_CONTROL: Record<string, unknown>[] = [
  desc(0, 0),
  desc(3, 2, { kind: 'broadcast', op: '', root: 1, dtype: 3 }),
  desc(9, 0, { kind: 'barrier', op: '', dtype: 0, count: 0 }),
  desc(1, 0, { compression: 'fp16' }),
  { t: 'abort', origin: 2, error: { code: 'RING_ERR_TIMEOUT', message: 'x timed out', details: { rank: 2, ranks: [1], op: 'allreduce', seq: 4 } } },
  { t: 'abort', origin: 0, error: { code: 'RING_ERR_PEER_LOST', message: 'gone', details: { rank: 0, ranks: [2], op: undefined } } },
  { t: 'bye', rank: 0 },
];
const VALID_OTHER: Record<string, unknown>[] = [
  { t: 'challenge', nonce: Buffer.alloc(32, 1), rank: 0, role: 'rank' },
  { t: 'auth', nonce: Buffer.alloc(32, 2), rank: 1, mac: Buffer.alloc(32, 3) },
  { t: 'welcome', mac: Buffer.alloc(32, 4) },
  { t: 'set', id: 1, key: 'ring/0', value: { host: '127.0.0.1', port: 4000, size: 3, chunkBytes: 1024, pid: 1, hostname: 'h' } },
  { t: 'get', id: 2, keys: ['ring/0', 'ring/1'], timeoutMs: 1000 },
  { t: 'ok', id: 2, values: [{ host: '127.0.0.1', port: 4000 }] },
  { t: 'err', id: 2, message: 'timed out', missing: ['ring/1'] },
];

const isInt = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v);
/** What validateControl (and, for a descriptor, validateDescriptor) promises about anything it accepts. */
function expectWellFormed(msg: LinkControlMessage, where: string) {
  expect(Object.getPrototypeOf(msg), where).toBe(Object.prototype);
  const m = msg as Exclude<LinkControlMessage, { t: 'desc' }> | (Extract<LinkControlMessage, { t: 'desc' }> & { d: OpDescriptor });
  if (m.t === 'desc') {
    expect(Object.keys(m).sort(), where).toEqual(['d', 'origin', 'seq', 't']);
    expect(isInt(m.seq) && m.seq >= 0 && isInt(m.origin) && m.origin >= 0, where).toBe(true);
    expect(Object.keys(m.d).sort(), where).toEqual(['compression', 'count', 'dtype', 'kind', 'name', 'op', 'root']);
    expect(['allreduce', 'allgather', 'broadcast', 'reducescatter', 'barrier'], where).toContain(m.d.kind);
    expect(['', 'sum', 'average', 'min', 'max', 'product'], where).toContain(m.d.op);
    expect(['none', 'fp16', 'bf16'], where).toContain(m.d.compression);
    expect(isInt(m.d.dtype) && m.d.dtype >= 0 && m.d.dtype <= 8 && isInt(m.d.count) && m.d.count >= 0 && isInt(m.d.root), where).toBe(true);
    expect(typeof m.d.name, where).toBe('string');
  } else if (m.t === 'abort') {
    expect(m.error.code, where).toMatch(/^RING_ERR_[A-Z_]+$/);
    expect(typeof m.error.message, where).toBe('string');
    for (const [k, v] of Object.entries(m.error.details)) {
      expect(['rank', 'ranks', 'op', 'seq', 'field'], where).toContain(k);
      if (k === 'ranks') expect(Array.isArray(v) && (v as unknown[]).every(isInt), where).toBe(true);
    }
  } else {
    expect(m.t, where).toBe('bye');
    expect(isInt(m.rank), where).toBe(true);
  }
}

/** Feeds one message to the decoders; returns what came out or the protocol error. */
function decodeOne(buf: Uint8Array, where: string): { control?: LinkControlMessage; other?: unknown; error?: RingError } {
  try {
    const d = decodeMessage(buf, PEER);
    if (d.kind !== 'control') {
      if (d.kind === 'data') expect(d.payload.byteLength, where).toBe(buf.byteLength - DATA_HEADER_BYTES);
      return { other: d };
    }
    expect(typeof d.msg.t, where).toBe('string');
    if (['desc', 'abort', 'bye'].includes(d.msg.t as string) || !['challenge', 'auth', 'welcome', 'set', 'get', 'ok', 'err'].includes(d.msg.t as string)) {
      // The link checks a message's envelope, the communicator the descriptor inside.
      const m = validateControl(d.msg, PEER);
      if (m.t === 'desc') m.d = validateDescriptor(m.d, PEER, 3);
      return { control: m };
    }
    return { other: d.msg };
  } catch (e) {
    expect(e, `${where}: ${(e as Error)?.stack}`).toBeInstanceOf(RingError);
    expect((e as RingError).code, where).toBe('RING_ERR_PROTOCOL');
    expect((e as Error).message, where).toContain(PEER);
    return { error: e as RingError };
  }
}

describe('decoders: mutated frames and control messages', () => {
  it('every mutation of a valid message decodes to a well-formed message or a protocol error naming the peer', () => {
    const counts = { accepted: 0, rejected: 0 };
    const reasons = new Map<string, number>();
    const N = 20_000;
    for (let i = 0; i < N; i++) {
      const rng = caseRng(1, i);
      const where = `seed ${SEED} decoder case ${i}`;
      let buf: Buffer;
      const family = rng.int(4);
      if (family === 0) {
        // Data frames: header fields, lengths, kinds.
        const payload = Buffer.alloc(rng.pick([0, 1, 4, 64, 1000]), 9);
        const h: DataHeader = { seq: rng.int(5), step: rng.int(4), chunk: rng.int(4), codec: rng.int(3), scale: 1 };
        buf = rng.chance(0.5) ? encodeData(h, payload) : encodeDataHeader(h, payload.length, KIND_DATA_HEADER);
        buf = rng.chance(0.3) ? mutateBytes(rng, buf) : Buffer.from(buf);
        if (buf.length >= 4 && rng.chance(0.5)) buf.writeUInt32LE(rng.pick([0, 1, payload.length + 1, 0xffffffff, 2 ** 31]), Math.min(20, buf.length - 4) & ~3);
      } else {
        const base = rng.chance(0.6) ? rng.pick(VALID_CONTROL) : rng.pick(VALID_OTHER);
        if (family === 1) buf = Buffer.concat([Buffer.from([0]), mp(mutateObject(rng, base))]);
        else if (family === 2) buf = mutateBytes(rng, encodeControl(base), 1);
        else {
          // Several object mutations at once, or a hostile value as the whole message.
          let m: unknown = base;
          for (let k = 1 + rng.int(3); k > 0 && m && typeof m === 'object' && !(m instanceof Entries) && !(m instanceof Uint8Array) && !Array.isArray(m); k--) {
            m = mutateObject(rng, m as Record<string, unknown>);
          }
          buf = Buffer.concat([Buffer.from([0]), mp(rng.chance(0.1) ? rng.pick(HOSTILE) : m)]);
        }
      }
      const out = decodeOne(buf, where);
      if (out.error) {
        counts.rejected++;
        const why = out.error.message.replace(/from rank 0 \(fuzz peer\)/, '').replace(/[0-9]+/g, '#').slice(0, 60);
        reasons.set(why, (reasons.get(why) ?? 0) + 1);
      } else {
        counts.accepted++;
        if (out.control) expectWellFormed(out.control, where);
      }
      if (i % 1000 === 0) guard.check();
    }
    console.log(`decoders: ${N} cases, ${counts.accepted} accepted, ${counts.rejected} protocol errors; ${reasons.size} distinct reasons`);
    // The mix must exercise both sides: a fuzzer whose inputs are all rejected tests little.
    expect(counts.accepted).toBeGreaterThan(N / 20);
    expect(counts.rejected).toBeGreaterThan(N / 2);
    guard.check();
  });

  it('hostile msgpack shapes: each is a protocol error, and nothing reaches Object.prototype', () => {
    const shapes: Array<[string, unknown]> = [
      ['__proto__ key', new Entries([['t', 'desc'], ['__proto__', { polluted: 1 }]])],
      ['nested __proto__ key', new Entries([['t', 'abort'], ['origin', 0], ['error', new Entries([['__proto__', { polluted: 1 }]])]])],
      ['constructor.prototype', new Entries([['t', 'bye'], ['rank', 0], ['constructor', { prototype: { polluted: 1 } }]])],
      ['prototype key', new Entries([['t', 'bye'], ['prototype', { polluted: 1 }]])],
      ['non-string key', new Entries([['t', 'bye'], [1, 2]])],
      ['deep nesting', new Entries([['t', 'bye'], ['rank', DEEP_ARRAY]])],
      ['huge array header', [HUGE_ARRAY]],
      ['error code constructor', { t: 'abort', origin: 0, error: { code: 'constructor', message: 'x' } }],
      ['error code __proto__', { t: 'abort', origin: 0, error: { code: '__proto__', message: 'x' } }],
      ['error code toString', { t: 'abort', origin: 0, error: { code: 'toString', message: 'x' } }],
      ['details not an object', { t: 'abort', origin: 0, error: { code: 'RING_ERR_TIMEOUT', message: 'x', details: 'abc' } }],
      ['details.ranks not ints', { t: 'abort', origin: 0, error: { code: 'RING_ERR_TIMEOUT', message: 'x', details: { ranks: ['a'] } } }],
      ['int64 seq', { t: 'desc', seq: 2n ** 40n, origin: 0, d: desc(0, 0).d }],
      ['negative seq', desc(-1, 0)],
      ['float count', desc(0, 0, { count: 1.5 })],
      ['dtype code 99', desc(0, 0, { dtype: 99 })],
      ['dtype code 0 on allreduce', desc(0, 0, { dtype: 0 })],
      ['unknown collective', desc(0, 0, { kind: 'scatterv' })],
      ['unknown reduction', desc(0, 0, { op: 'xor' })],
      ['unknown compression', desc(0, 0, { compression: 'int8' })],
      ['descriptor is an array', { t: 'desc', seq: 0, origin: 0, d: [] }],
      ['descriptor is binary', { t: 'desc', seq: 0, origin: 0, d: Buffer.alloc(4) }],
      ['unknown type', { t: 'hello' }],
      ['type not a string', { t: 1 }],
      ['top level array', ['desc']],
    ];
    for (const [name, shape] of shapes) {
      const out = decodeOne(Buffer.concat([Buffer.from([0]), mp(shape)]), name);
      expect(out.error, name).toBeDefined();
    }
    // Within maxPayload but too many values; and a map too wide for any message.
    const many = Buffer.concat([Buffer.from([0, 0x82, 0xa1, 0x74, 0xa3, 0x62, 0x79, 0x65, 0xa1, 0x78, 0xdd, 0, 4, 0x93, 0xe0]), Buffer.alloc(300_000, 0xc0)]);
    expect(decodeOne(many, '300,000-element array').error?.message).toMatch(/more than 262144 values/);
    const wide = control(Object.fromEntries([['t', 'bye'], ...Array.from({ length: 50_000 }, (_, k) => [`k${k}`, k])]));
    expect(decodeOne(wide, '50,000-key map').error?.message).toMatch(/a map of 50001 entries at byte \d+ \(at most 64\)/);
    const trailing = Buffer.concat([encodeControl({ t: 'bye', rank: 0 }), Buffer.from([0xc0])]);
    expect(decodeOne(trailing, 'trailing bytes').error).toBeDefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    guard.check();
  });
});

/** Where two plain values differ (a path), or undefined; cheap to report even for big values. */
function firstDifference(a: unknown, b: unknown, path = '$'): string | undefined {
  if (Object.is(a, b)) return undefined;
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.compare(a, b) === 0 ? undefined : `${path}: bytes differ`;
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return `${path}: length ${a.length} vs ${b.length}`;
    for (let i = 0; i < a.length; i++) {
      const d = firstDifference(a[i], b[i], `${path}[${i}]`);
      if (d) return d;
    }
    return undefined;
  }
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    if (ka.join('\0') !== kb.join('\0')) return `${path}: keys ${ka.slice(0, 5)} vs ${kb.slice(0, 5)}`;
    for (const k of ka) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`);
      if (d) return d;
    }
    return undefined;
  }
  return `${path}: ${String(a).slice(0, 40)} (${typeof a}) vs ${String(b).slice(0, 40)} (${typeof b})`;
}

describe('decoders: no false alarms', () => {
  it('whatever encodeControl writes for plain data decodes back unchanged', () => {
    const rng = caseRng(5, 0);
    const scalar = () =>
      rng.pick<() => unknown>([
        () => rng.int(256) - 128,
        () => rng.pick([0, 127, 128, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, -(2 ** 31), -(2 ** 31) - 1, 2 ** 53 - 1, -(2 ** 53) + 1]),
        () => (rng.next() - 0.5) * 10 ** rng.int(40),
        () => rng.pick([NaN, Infinity, -Infinity, 1e-310]),
        // Each length around a MessagePack size class; the 16-bit and 32-bit classes rarely.
        () => 'é'.repeat(rng.chance(0.01) ? rng.pick([32_767, 32_768]) : rng.pick([0, 15, 16, 31, 32, 127, 128])),
        () => Buffer.alloc(rng.chance(0.01) ? rng.pick([65_535, 65_536]) : rng.pick([0, 1, 255, 256]), 5),
        () => rng.pick([true, false, null, undefined]),
      ])();
    // Containers up to 30 deep (the limit is 32 with the message itself), at most ~3000 values in all.
    let budget = 0;
    const value = (depth: number): unknown => {
      if (depth >= 30 || budget <= 0 || rng.chance(0.3)) return scalar();
      const isArray = rng.chance(0.5);
      const n = Math.min(budget, isArray ? rng.pick([0, 1, 2, 15, 16, 300]) : rng.pick([0, 1, 2, 15, 16, 40]));
      budget -= n;
      if (isArray) return Array.from({ length: n }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: n }, (_, k) => [`${'k'.repeat(rng.int(40))}${k}`, value(depth + 1)]));
    };
    for (let i = 0; i < 300; i++) {
      budget = 3000;
      const msg = { t: 'x', v: value(1) };
      const d = decodeMessage(encodeControl(msg), PEER);
      expect(d.kind, `case ${i}`).toBe('control');
      expect(firstDifference((d as { msg: unknown }).msg, msg), `case ${i}`).toBeUndefined();
    }
  });
});

/** A link the test writes into as if the peer had sent the bytes; what the communicator sends is acknowledged at once. */
class FuzzLink extends MessageLink {
  inject(buf: Uint8Array) {
    this.receive(buf);
  }
  protected write(_parts: Uint8Array[], done: (err?: Error) => void) {
    queueMicrotask(() => done(this.isClosed ? new Error('closed') : undefined));
  }
  protected closeTransport() {}
  ref() {}
  unref() {}
}

/** A link that records what its owner receives (re-encoded as the bytes the peer sent). */
class TapLink implements Link {
  readonly messages: Array<{ buf: Buffer; control?: LinkControlMessage; header?: DataHeader }> = [];
  constructor(private readonly inner: Link) {}
  get peer() {
    return this.inner.peer;
  }
  setHandlers(h: LinkHandlers) {
    this.inner.setHandlers({
      data: (header, payload) => {
        this.messages.push({ buf: encodeData(header, payload), header: { ...header } });
        h.data(header, payload);
      },
      control: (m) => {
        this.messages.push({ buf: encodeControl(m), control: structuredClone(m) });
        h.control(m);
      },
      closed: (e) => h.closed(e),
    });
  }
  sendData(...a: Parameters<Link['sendData']>) {
    this.inner.sendData(...a);
  }
  sendControl(...a: Parameters<Link['sendControl']>) {
    this.inner.sendControl(...a);
  }
  ref() {}
  unref() {}
  close() {
    this.inner.close();
  }
}

const CHUNK = 32;
const values = (ctor: { from(a: ArrayLike<number>): NumericArray }, r: number, n: number, small = false) =>
  ctor.from(Array.from({ length: n }, (_, i) => (small ? ((i + r) % 4) - 1 : ((i * 7 + r * 13) % 41) - 20)));
type Scenario = { name: string; compressed?: boolean; run(g: RingGroup): Promise<unknown> };
const SCENARIOS: Scenario[] = [
  { name: 'allreduce sum float32', run: (g) => g.allreduce(values(Float32Array, g.rank, 50), { name: 'a' }) },
  { name: 'allreduce max int32', run: (g) => g.allreduce(values(Int32Array, g.rank, 37), { op: 'max' }) },
  { name: 'allreduce average fp16', compressed: true, run: (g) => g.allreduce(values(Float32Array, g.rank, 40), { op: 'average', compression: 'fp16' }) },
  { name: 'allreduce min bf16', compressed: true, run: (g) => g.allreduce(values(Float32Array, g.rank, 29), { op: 'min', compression: 'bf16' }) },
  { name: 'reducescatter product float64', run: (g) => g.reducescatter(values(Float64Array, g.rank, 31, true), { op: 'product' }) },
  { name: 'allgather uneven int16', run: (g) => g.allgather(values(Int16Array, g.rank, 5 + 9 * g.rank)) },
  { name: 'broadcast from rank 0', run: (g) => g.broadcast(values(Uint8Array, g.rank, 70).map(Math.abs), { root: 0 }) },
  { name: 'broadcast from rank 2', run: (g) => g.broadcast(values(Float32Array, g.rank, 33), { root: 2 }) },
  { name: 'barrier', run: (g) => g.barrier({ name: 'b' }) },
];

/** Runs a scenario on a 3-rank memory ring; returns what rank 1 received from rank 0, and its result. */
async function record(s: Scenario) {
  const lefts: Link[] = [];
  const rights: Link[] = [];
  for (let r = 0; r < 3; r++) {
    const [toRight, fromLeft] = memoryLinkPair(r, (r + 1) % 3);
    rights[r] = toRight;
    lefts[(r + 1) % 3] = fromLeft;
  }
  const tap = new TapLink(lefts[1]);
  lefts[1] = tap;
  const opts = { chunkBytes: CHUNK, maxInflight: 64, timeoutMs: 10_000, logger: silentLogger };
  const groups = [0, 1, 2].map((r) => new RingGroup(new Communicator(r, 3, lefts[r], rights[r], opts), { localRank: r, localSize: 3 }));
  const results = await Promise.all(groups.map((g) => s.run(g)));
  await Promise.all(groups.map((g) => g.shutdown()));
  return { messages: tap.messages.slice(), result: results[1] as NumericArray | undefined };
}

type Msg = { buf: Buffer; control?: LinkControlMessage; header?: DataHeader };

/** Damages the recorded traffic; says what it did and whether a silently different result is legitimate. */
function mutateTraffic(rng: Rng, msgs: Msg[], compressed: boolean): { out: Buffer[]; what: string[]; loose: boolean; extraAbort?: string } {
  const out: Array<Buffer | Buffer[]> = msgs.map((m) => m.buf);
  // What each slot of `out` holds now (a swap moves a message's description with it).
  const meta = msgs.slice();
  const touched = new Set<number>();
  const what: string[] = [];
  let loose = false;
  let extraAbort: string | undefined;
  for (let k = 1 + rng.int(2); k > 0; k--) {
    const i = rng.int(out.length);
    const m = meta[i];
    const cur = out[i];
    // Once per message: a second mutation would take a truncated frame for a whole one.
    if (Array.isArray(cur) || touched.has(i)) continue;
    touched.add(i);
    const r = rng.int(10);
    if (r === 0) {
      what.push(`drop #${i}`);
      out[i] = [];
    } else if (r === 1) {
      what.push(`duplicate #${i}`);
      out[i] = [cur, cur];
    } else if (r === 2 && i + 1 < out.length && !Array.isArray(out[i + 1])) {
      what.push(`swap #${i} #${i + 1}`);
      [out[i], out[i + 1]] = [out[i + 1], cur];
      [meta[i], meta[i + 1]] = [meta[i + 1], meta[i]];
      touched.add(i + 1);
      loose = true; // a reordering the ring could never produce may reorder arithmetic too
    } else if (r === 3) {
      // An extra message the peer had no business sending.
      const extra = rng.pick<unknown>([
        { t: 'bye', rank: rng.pick([1, 2, 3, -1, 0.5, 'x']) },
        { t: 'abort', origin: rng.pick([0, 3, 99, -1]), error: { code: rng.pick(['constructor', '__proto__', 'nope', 7]), message: 'm' } },
        { t: 'abort', origin: 0, error: { code: 'RING_ERR_PROTOCOL', message: 'legit abort', details: rng.pick(HOSTILE) } },
        { t: rng.pick(['challenge', 'auth', 'welcome', 'set', 'ok', '']) },
        desc(rng.pick([0, 1, 5, 2000, 2 ** 32]), rng.pick([0, 1, 2, 3])),
      ]);
      if ((extra as { error?: { message?: string } }).error?.message === 'legit abort') extraAbort = 'RING_ERR_PROTOCOL';
      what.push(`insert before #${i}: ${JSON.stringify(extra, (_k, v) => (typeof v === 'bigint' ? String(v) : v))?.slice(0, 80)}`);
      out[i] = [Buffer.concat([Buffer.from([0]), mp(extra)]), cur];
    } else if (m.control) {
      if (rng.chance(0.6)) {
        const mm = mutateObject(rng, m.control as unknown as Record<string, unknown>);
        what.push(`control #${i} -> ${String(mp(mm).subarray(0, 40).toString('hex'))}`);
        out[i] = Buffer.concat([Buffer.from([0]), mp(mm)]);
      } else {
        what.push(`control #${i} bytes`);
        out[i] = mutateBytes(rng, cur, 1);
      }
    } else if (cur.length < DATA_HEADER_BYTES) {
      what.push(`drop #${i} (already cut short)`);
      out[i] = [];
    } else {
      const b = Buffer.from(cur);
      const field = rng.pick(['kind', 'codec', 'reserved', 'seq', 'step', 'chunk', 'scale', 'length', 'truncate', 'extend', 'split']);
      const u32 = () => rng.pick([0, 1, 2, 3, 4, 7, 1023, 1024, 2 ** 31, 2 ** 32 - 1, rng.int(2 ** 32)]);
      what.push(`frame #${i} ${field}`);
      if (field === 'kind') b[0] = rng.pick([0, 2, 3, 255]);
      else if (field === 'codec') b[1] = rng.int(256);
      else if (field === 'reserved') b.writeUInt16LE(rng.int(65536), 2);
      else if (field === 'seq') b.writeUInt32LE(u32(), 4);
      else if (field === 'step') b.writeUInt32LE(u32(), 8);
      else if (field === 'chunk') b.writeUInt32LE(u32(), 12);
      else if (field === 'scale') {
        b.writeFloatLE(rng.pick([0, -1, NaN, Infinity, 1e-30, 2, 0.5, 1e30]), 16);
        loose ||= compressed; // a finite positive scale is a valid, different number
      } else if (field === 'length') b.writeUInt32LE(u32(), 20);
      if (field === 'truncate') out[i] = b.subarray(0, rng.int(b.length));
      else if (field === 'extend') out[i] = Buffer.concat([b, Buffer.alloc(1 + rng.int(8))]);
      else if (field === 'split') {
        // Header and payload as two messages, with the declared length off by some bytes.
        const payload = b.subarray(DATA_HEADER_BYTES);
        const hdr = Buffer.from(b.subarray(0, DATA_HEADER_BYTES));
        hdr[0] = KIND_DATA_HEADER;
        hdr.writeUInt32LE((payload.length + rng.pick([0, 1, -1, 8])) >>> 0, 20);
        out[i] = [hdr, payload];
      } else out[i] = b;
    }
  }
  return { out: out.flat(), what, loose, extraAbort };
}

describe('communicator: replayed traffic from the left neighbour, mutated', () => {
  it('every case ends exactly right, or in a typed error naming rank 0, or (traffic cut short) in a timeout', async () => {
    const recorded = await Promise.all(SCENARIOS.map(record));
    for (const [k, r] of recorded.entries()) {
      // Sanity: the recording replays to the same result.
      expect(r.messages.length, SCENARIOS[k].name).toBeGreaterThan(0);
    }
    const N = 3000;
    const tally = new Map<string, number>();
    const pending: Array<Promise<void>> = [];
    for (let i = 0; i < N; i++) {
      const rng = caseRng(2, i);
      const s = rng.int(SCENARIOS.length);
      const scen = SCENARIOS[s];
      const { out, what, loose, extraAbort } = mutateTraffic(rng, recorded[s].messages, !!scen.compressed);
      const where = `seed ${SEED} communicator case ${i} (${scen.name}): ${what.join('; ')}`;
      const left = new FuzzLink(0, PEER);
      const right = new FuzzLink(2, 'rank 2 (fuzz sink)');
      const comm = new Communicator(1, 3, left, right, { chunkBytes: CHUNK, maxInflight: 64, timeoutMs: 60, logger: silentLogger });
      const g = new RingGroup(comm, { localRank: 1, localSize: 3 });
      let outcome: { ok: true; v: unknown } | { ok: false; e: unknown } | undefined;
      const p = scen.run(g).then(
        (v) => void (outcome = { ok: true, v }),
        (e) => void (outcome = { ok: false, e }),
      );
      for (const buf of out) {
        try {
          left.inject(buf);
        } catch (e) {
          throw new Error(`${where}: receive() threw ${(e as Error).stack}`);
        }
      }
      await new Promise((r) => setImmediate(r));
      const judge = () => {
        const o = outcome!;
        if (o.ok) {
          const want = recorded[s].result;
          if (want !== undefined && !loose) {
            expect(firstDiff(o.v as NumericArray, want), where).toBeUndefined();
            expect(sameBytes(o.v as NumericArray, want), where).toBe(true);
          }
          tally.set('ok', (tally.get('ok') ?? 0) + 1);
          return;
        }
        const e = o.e as RingError;
        expect(e, `${where}: ${(e as Error)?.stack}`).toBeInstanceOf(RingError);
        const allowed = ['RING_ERR_PROTOCOL', 'RING_ERR_MISMATCH', 'RING_ERR_TIMEOUT', ...(extraAbort ? [extraAbort] : [])];
        expect(allowed, `${where}: ${e.message}`).toContain(e.code);
        if (e.code === 'RING_ERR_PROTOCOL' && !e.message.includes('legit abort')) {
          expect(e.message, where).toMatch(/protocol error: rank 0 /);
          expect(e.details.ranks, where).toEqual([0]);
        }
        tally.set(e.code, (tally.get(e.code) ?? 0) + 1);
      };
      if (outcome) judge();
      else pending.push(p.then(judge));
      if (i % 500 === 0) guard.check();
    }
    // Whatever did not settle must still end: its timeout fires (no hang).
    await Promise.race([
      Promise.all(pending),
      new Promise((_, rej) => setTimeout(() => rej(new Error(`${pending.length} operations never settled`)), 20_000)),
    ]);
    console.log(`communicator: ${N} cases: ${[...tally].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    expect(tally.get('RING_ERR_PROTOCOL') ?? 0).toBeGreaterThan(N / 4);
    expect(tally.get('ok') ?? 0).toBeGreaterThan(0);
    guard.check();
  });
});

/** A WebSocket stand-in for the handshake: what the code sends is recorded, what the peer sends is emitted. */
class FakeSocket extends EventEmitter {
  sent: Buffer[] = [];
  onSend: ((b: Buffer) => void) | undefined;
  send(b: Buffer) {
    this.sent.push(b);
    this.onSend?.(b);
  }
  deliver(b: Buffer) {
    this.emit('message', b, true);
  }
}

const TOKEN = 'fuzz-token';
const hmac = (dir: string, serverId: string, rank: number, nonceS: Uint8Array, nonceC: Uint8Array) =>
  createHmac('sha256', TOKEN).update(`ringreduce-v1|${dir}|${serverId}|${rank}|`).update(nonceS).update(nonceC).digest();

describe('handshake: mutated challenge / auth / welcome', () => {
  const HPEER = 'connection from 10.9.8.7:4242';
  it('the server side: a mutated auth is refused with an auth error naming the connection, or accepted only if still valid', async () => {
    const tally = new Map<string, number>();
    const N = 1500;
    const runs: Array<Promise<void>> = [];
    for (let i = 0; i < N; i++) {
      const rng = caseRng(3, i);
      const ws = new FakeSocket();
      const inbox = new Inbox(ws as never);
      const done = serverHandshake(inbox, {
        token: TOKEN,
        serverId: 'rank:0',
        challenge: { rank: 0, role: 'rank' },
        admit: (r) => (r === 1 ? undefined : `only rank 1 may connect to rank 0`),
        timeoutMs: 50,
        peer: HPEER,
      });
      const challenge = (decodeMessage(ws.sent[0], 'server') as unknown as { msg: { nonce: Buffer } }).msg;
      const nonceC = Buffer.alloc(32, i & 255);
      const auth = { t: 'auth', nonce: nonceC, rank: 1, mac: hmac('c', 'rank:0', 1, challenge.nonce, nonceC) };
      const variant = rng.int(3);
      const where = `seed ${SEED} server handshake case ${i} variant ${variant}`;
      let buf: Buffer;
      if (variant === 0) buf = Buffer.concat([Buffer.from([0]), mp(mutateObject(rng, auth))]);
      else if (variant === 1) buf = mutateBytes(rng, encodeControl(auth), 1);
      else buf = encodeData({ seq: 0, step: 0, chunk: 0, codec: 0, scale: 1 }, Buffer.alloc(rng.int(8)));
      ws.deliver(buf);
      runs.push(
        done.then(
          (rank) => {
            // Accepted: then it really was a valid auth for rank 1, and the server proved itself.
            expect(rank, where).toBe(1);
            expect(ws.sent.length, where).toBe(2);
            tally.set('accepted', (tally.get('accepted') ?? 0) + 1);
          },
          (e: RingError) => {
            expect(e, `${where}: ${e?.stack}`).toBeInstanceOf(RingError);
            expect(['RING_ERR_AUTH', 'RING_ERR_TIMEOUT'], where).toContain(e.code);
            expect(e.message, where).toContain(HPEER);
            expect(ws.sent.length, `${where}: no welcome after a failure`).toBe(1);
            tally.set(e.code, (tally.get(e.code) ?? 0) + 1);
          },
        ),
      );
    }
    await Promise.all(runs);
    console.log(`server handshake: ${N} cases: ${[...tally].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    expect(tally.get('RING_ERR_AUTH') ?? 0).toBeGreaterThan(N / 2);
    guard.check();
  });

  it('the client side: a mutated challenge or welcome is refused with an auth error naming the server', async () => {
    const tally = new Map<string, number>();
    const N = 1500;
    const runs: Array<Promise<void>> = [];
    for (let i = 0; i < N; i++) {
      const rng = caseRng(4, i);
      const ws = new FakeSocket();
      const inbox = new Inbox(ws as never);
      const nonceS = Buffer.alloc(32, (i * 7) & 255);
      const mutateChallenge = rng.chance(0.5);
      const where = `seed ${SEED} client handshake case ${i} (${mutateChallenge ? 'challenge' : 'welcome'})`;
      const done = clientHandshake(inbox, { token: TOKEN, rank: 1, serverId: 'rank:0', timeoutMs: 50, peer: 'rank 0 at 10.9.8.7:4242' });
      ws.onSend = (b) => {
        // The client answered the challenge: reply with a welcome (valid, or mutated).
        const d = decodeMessage(b, 'client') as unknown as { msg: { nonce: Buffer } };
        const welcome = { t: 'welcome', mac: hmac('s', 'rank:0', 1, nonceS, d.msg.nonce) };
        queueMicrotask(() =>
          ws.deliver(mutateChallenge ? encodeControl(welcome) : rng.chance(0.5) ? Buffer.concat([Buffer.from([0]), mp(mutateObject(rng, welcome))]) : mutateBytes(rng, encodeControl(welcome), 1)),
        );
      };
      const challenge = { t: 'challenge', nonce: nonceS, rank: 0, role: 'rank' };
      ws.deliver(
        mutateChallenge
          ? rng.chance(0.5)
            ? Buffer.concat([Buffer.from([0]), mp(mutateObject(rng, challenge))])
            : mutateBytes(rng, encodeControl(challenge), 1)
          : encodeControl(challenge),
      );
      runs.push(
        done.then(
          () => void tally.set('accepted', (tally.get('accepted') ?? 0) + 1),
          (e: RingError) => {
            expect(e, `${where}: ${e?.stack}`).toBeInstanceOf(RingError);
            expect(['RING_ERR_AUTH', 'RING_ERR_TIMEOUT'], where).toContain(e.code);
            expect(e.message, where).toContain('rank 0 at 10.9.8.7:4242');
            tally.set(e.code, (tally.get(e.code) ?? 0) + 1);
          },
        ),
      );
    }
    await Promise.all(runs);
    console.log(`client handshake: ${N} cases: ${[...tally].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    expect(tally.get('RING_ERR_AUTH') ?? 0).toBeGreaterThan(N / 4);
    guard.check();
  });
});
