import { Packr } from 'msgpackr';
import { afterAll, describe, expect, it } from 'vitest';
import type { Collective } from '../src/collectives/collective.js';
import { descriptor, validateDescriptor } from '../src/collectives/descriptor.js';
import { MAX_ELEMENTS } from '../src/dtypes.js';
import { decide, validateLists } from '../src/engine/plan.js';
import { createLocalGroups, RingError, type RingGroup } from '../src/index.js';
import { resolveOptions } from '../src/options.js';
import { checkRecord } from '../src/rendezvous/records.js';
import { formRing } from '../src/rendezvous/ring.js';
import { startStoreServer, StoreClient } from '../src/rendezvous/store.js';
import { validateControl } from '../src/transport/link.js';
import { checkMsgpack } from '../src/transport/msgpack-check.js';
import { decodeMessage } from '../src/transport/wire.js';
import { Entries, mp, prng, prototypeGuard, Raw } from './helpers/hostile.js';
import { ringWithImpostor, type Impostor } from './helpers/impostor.js';
import { withDeadline } from './helpers/reference.js';

/**
 * Issue 14, row 7: a token holder sent an allgather descriptor with count 2^40 and rank 0 died of
 * an uncaught RangeError (its neighbour then blamed rank 0). Every field of every descriptor kind,
 * and of the other control messages, is now checked when it arrives: hostile values (negative,
 * 2^40, NaN, strings, huge arrays, ...) in any field give RING_ERR_PROTOCOL naming the sender on
 * the rank it reached, the abort tells the other rank, and no process crashes (vitest fails a run
 * on any uncaught exception). First at the unit level (every kind x field x value), then in a live
 * 3-rank ring whose rank 2 is an impostor holding the token (test/helpers/impostor.ts).
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
const guard = prototypeGuard();
afterAll(() => guard.check());

const PEER = 'rank 2 (left neighbour)';
const SEQ = 1; // seq 0 is the ring's start-up barrier

/** What an honest rank 2 would send for each kind, as the real ranks call it below. */
const HONEST: Record<string, Record<string, unknown>> = {
  allreduce: { kind: 'allreduce', op: 'sum', dtype: 1, count: 64, name: 'victim', root: -1, compression: 'none' },
  allgather: { kind: 'allgather', op: '', dtype: 1, count: 4, name: 'victim', root: -1, compression: 'none' },
  broadcast: { kind: 'broadcast', op: '', dtype: 1, count: 4, name: 'victim', root: 0, compression: 'none' },
  reducescatter: { kind: 'reducescatter', op: 'sum', dtype: 1, count: 6, name: 'victim', root: -1, compression: 'none' },
  barrier: { kind: 'barrier', op: '', dtype: 0, count: 0, name: 'victim', root: -1, compression: 'none' },
  alltoall: { kind: 'alltoall', op: '', dtype: 1, count: 3, name: 'victim', root: -1, compression: 'none' },
};
const KINDS = Object.keys(HONEST);
const FIELDS = ['kind', 'op', 'dtype', 'count', 'name', 'root', 'compression'];

/** Hostile values for any field: wrong types, out of range, non-finite, huge. */
const VALUES: ReadonlyArray<[string, unknown]> = [
  ['-1', -1],
  ['-2^31', -(2 ** 31)],
  ['2^40', 2 ** 40],
  ['2^53', 2 ** 53],
  ['MAX_ELEMENTS+1', MAX_ELEMENTS + 1],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['0.5', 0.5],
  ['-0', -0],
  ["'1'", '1'],
  ['a 5000-character string', 'x'.repeat(5000)],
  ['text with ESC and newlines', 'evil\n\x1b[2K[1,0]<stderr>:forged'],
  ['true', true],
  ['null', null],
  ['undefined', undefined],
  ['[]', []],
  ['an array of 200,000', new Array(200_000).fill(7)],
  ['{}', {}],
  ['{constructor}', new Entries([['constructor', { prototype: { polluted: 1 } }]])],
  ['16 bytes', Buffer.alloc(16, 1)],
  ['2^62 (int64)', 2n ** 62n],
];

const descMsg = (d: unknown, extra: Record<string, unknown> = {}) => ({ t: 'desc', seq: SEQ, origin: 2, d, ...extra });
const control = (m: unknown) => Buffer.concat([Buffer.from([0]), mp(m)]);
/** Each hostile value encoded once (the large ones cost to encode), spliced into messages as is. */
const ENCODED = new Map<unknown, Raw>(VALUES.map(([, v]) => [v, new Raw(mp(v))]));
const withField = (kind: string, field: string, v: unknown) => {
  const entries: Array<[unknown, unknown]> = Object.entries(HONEST[kind]).map(([k, x]) => [k, k === field ? (ENCODED.get(v) ?? v) : x]);
  return new Entries(entries);
};

/** Decodes `buf` as rank 0 would from its left neighbour: undefined if accepted, else the error. */
function rejectedAtDecode(buf: Buffer, size = 3): RingError | undefined {
  try {
    const d = decodeMessage(buf, PEER);
    if (d.kind !== 'control') throw new Error('not a control message');
    const m = validateControl(d.msg, PEER);
    if (m.t === 'desc') {
      const desc = validateDescriptor(m.d, PEER, size);
      // What an accepted descriptor promises: every field in range for its kind.
      expect(desc.count).toBeLessThanOrEqual(MAX_ELEMENTS);
      expect(Number.isSafeInteger(desc.count) && desc.count >= 0).toBe(true);
      expect(desc.root === -1 || (desc.kind === 'broadcast' && desc.root >= 0 && desc.root < size)).toBe(true);
      expect(desc.name.length).toBeLessThanOrEqual(1024);
    }
    return undefined;
  } catch (e) {
    expect(e, String((e as Error)?.stack)).toBeInstanceOf(RingError);
    expect((e as RingError).code).toBe('RING_ERR_PROTOCOL');
    expect((e as RingError).message).toContain(PEER);
    // Whatever the peer sent is shown short and safe.
    expect((e as RingError).message.length).toBeLessThan(600);
    expect((e as RingError).message).not.toMatch(/[\x00-\x1f\x7f]/);
    return e as RingError;
  }
}

describe('descriptor fields at decode (every kind x field x hostile value)', () => {
  it('each value is accepted within bounds or refused with RING_ERR_PROTOCOL naming the sender; never another exception', () => {
    let refused = 0;
    let accepted = 0;
    for (const kind of KINDS) {
      for (const field of FIELDS) {
        for (const [what, v] of VALUES) {
          const e = rejectedAtDecode(control(descMsg(withField(kind, field, v))));
          if (e) refused++;
          else accepted++;
          // A few values are legal in a field (count -0 is 0, a 1-char name), never the large or non-finite ones.
          if (['2^40', 'MAX_ELEMENTS+1', 'NaN', 'Infinity', 'an array of 200,000', 'a 5000-character string'].includes(what)) {
            expect(e, `${kind}.${field} = ${what}`).toBeDefined();
          }
        }
      }
    }
    console.log(`descriptor fields: ${refused} refused, ${accepted} accepted (of ${KINDS.length * FIELDS.length * VALUES.length})`);
    expect(refused).toBeGreaterThan(0.9 * (refused + accepted));
    guard.check();
  });

  it('counts up to the largest array are accepted, one more is not; names up to 1,024 characters; a root inside the group', () => {
    const ok = (d: Record<string, unknown>) => rejectedAtDecode(control(descMsg(d))) === undefined;
    expect(ok({ ...HONEST.allgather, count: MAX_ELEMENTS })).toBe(true);
    expect(ok({ ...HONEST.allgather, count: MAX_ELEMENTS + 1 })).toBe(false);
    expect(ok({ ...HONEST.allgather, name: 'n'.repeat(1024) })).toBe(true);
    expect(ok({ ...HONEST.allgather, name: 'n'.repeat(1025) })).toBe(false);
    expect(ok({ ...HONEST.broadcast, root: 2 })).toBe(true);
    expect(ok({ ...HONEST.broadcast, root: 3 })).toBe(false);
    expect(ok({ ...HONEST.allreduce, compression: 'fp16' })).toBe(true);
    expect(ok({ ...HONEST.allreduce, compression: 'fp16', dtype: 3 })).toBe(false); // int32 is never compressed
    expect(ok({ ...HONEST.allgather, op: 'sum' })).toBe(false); // no reduction in an all-gather
    expect(ok({ ...HONEST.barrier, count: 1 })).toBe(false);
  });

  it('the envelope (seq, origin, inline payload) and the other control messages, field by field', () => {
    const envelopes: Array<[string, unknown]> = [];
    for (const [what, value] of VALUES) {
      const v = ENCODED.get(value);
      envelopes.push([`desc.seq = ${what}`, descMsg(HONEST.allreduce, { seq: v })]);
      envelopes.push([`desc.origin = ${what}`, descMsg(HONEST.allreduce, { origin: v })]);
      envelopes.push([`desc.p = ${what}`, descMsg(HONEST.allgather, { p: v })]);
      envelopes.push([`abort.origin = ${what}`, { t: 'abort', origin: v, error: { code: 'RING_ERR_TIMEOUT', message: 'x' } }]);
      envelopes.push([`abort.error.code = ${what}`, { t: 'abort', origin: 2, error: { code: v, message: 'x' } }]);
      envelopes.push([`abort.error.message = ${what}`, { t: 'abort', origin: 2, error: { code: 'RING_ERR_TIMEOUT', message: v } }]);
      for (const k of ['rank', 'ranks', 'op', 'seq', 'field']) {
        envelopes.push([`abort.error.details.${k} = ${what}`, { t: 'abort', origin: 2, error: { code: 'RING_ERR_TIMEOUT', message: 'x', details: { [k]: v } } }]);
      }
      envelopes.push([`bye.rank = ${what}`, { t: 'bye', rank: v }]);
      envelopes.push([`beat.rank = ${what}`, { t: 'beat', rank: v, everyMs: 100 }]);
      envelopes.push([`beat.everyMs = ${what}`, { t: 'beat', rank: 2, everyMs: v }]);
      envelopes.push([`t = ${what}`, { t: v }]);
    }
    let refused = 0;
    for (const [, m] of envelopes) if (rejectedAtDecode(control(m))) refused++;
    console.log(`control messages: ${refused} of ${envelopes.length} refused`);
    // An abort's message is made safe and short, whatever it was.
    const d = decodeMessage(control({ t: 'abort', origin: 2, error: { code: 'RING_ERR_TIMEOUT', message: `a\n\x1b[31m${'y'.repeat(100_000)}` } }), PEER);
    const m = validateControl((d as { msg: Record<string, unknown> }).msg, PEER);
    if (m.t !== 'abort') throw new Error(`expected an abort, got ${m.t}`);
    expect(m.error.message.length).toBeLessThan(2100);
    expect(m.error.message).toMatch(/^a\\n\\x1b\[31my+…\(\d+ more\)$/);
    // An inline payload over the cap, or on a kind that never inlines, is refused by the communicator (live test below).
  });
});

/** The real ranks' call of each kind (rank 2, the impostor, sends the descriptor the case makes). */
function call(g: RingGroup, kind: string): Promise<unknown> {
  const name = 'victim';
  switch (kind) {
    case 'allreduce':
      return g.allreduce(new Float32Array(64).fill(g.rank + 1), { name });
    case 'allgather':
      return g.allgather(new Float32Array(4), { name });
    case 'broadcast':
      return g.broadcast(new Float32Array(4), { root: 0, name });
    case 'reducescatter':
      return g.reducescatter(new Float32Array(6), { name });
    case 'barrier':
      return g.barrier({ name });
    default:
      return g.alltoall(new Float32Array(3), { name });
  }
}

interface LiveCase {
  name: string;
  kind: string;
  /** Which real rank the message reaches (0: from its left, the ring direction; 1: from its right). */
  target: 0 | 1;
  msg: unknown;
}

/** Cases for the live ring: per kind and field, four of the hostile values (2^40 always), all refused at decode. */
function liveCases(): LiveCase[] {
  const rng = prng(SEED ^ 0xde5c);
  const cases: LiveCase[] = [];
  for (const kind of KINDS) {
    for (const field of FIELDS) {
      const refusedHere = VALUES.filter(([, v]) => rejectedAtDecode(control(descMsg(withField(kind, field, v)))));
      const picks = new Set([refusedHere.find(([w]) => w === '2^40')!]);
      while (picks.size < Math.min(4, refusedHere.length)) picks.add(rng.pick(refusedHere));
      for (const [what, v] of picks) cases.push({ name: `${kind}.${field} = ${what}`, kind, target: 0, msg: descMsg(withField(kind, field, v)) });
    }
  }
  cases.push({ name: 'allreduce with 20,000 inline bytes', kind: 'allreduce', target: 0, msg: descMsg(HONEST.allreduce, { p: Buffer.alloc(20_000) }) });
  cases.push({ name: 'allgather with inline bytes', kind: 'allgather', target: 0, msg: descMsg(HONEST.allgather, { p: Buffer.alloc(16) }) });
  cases.push({ name: 'desc.seq = 2^40', kind: 'barrier', target: 0, msg: descMsg(HONEST.barrier, { seq: 2 ** 40 }) });
  cases.push({ name: 'desc.origin = 2^40', kind: 'barrier', target: 0, msg: descMsg(HONEST.barrier, { origin: 2 ** 40 }) });
  cases.push({ name: 'desc.origin = -1', kind: 'barrier', target: 0, msg: descMsg(HONEST.barrier, { origin: -1 }) });
  cases.push({ name: 'abort.error.details.ranks = an array of 200,000', kind: 'barrier', target: 0, msg: { t: 'abort', origin: 2, error: { code: 'RING_ERR_TIMEOUT', message: 'x', details: { ranks: new Array(200_000).fill(1) } } } });
  cases.push({ name: 'abort.origin = NaN', kind: 'barrier', target: 0, msg: { t: 'abort', origin: NaN, error: { code: 'RING_ERR_TIMEOUT', message: 'x' } } });
  cases.push({ name: 'bye.rank = 2^40', kind: 'barrier', target: 0, msg: { t: 'bye', rank: 2 ** 40 } });
  cases.push({ name: 'beat.everyMs = 2^40 (to rank 1)', kind: 'barrier', target: 1, msg: { t: 'beat', rank: 2, everyMs: 2 ** 40 } });
  cases.push({ name: 'beat.rank = -1 (to rank 1)', kind: 'barrier', target: 1, msg: { t: 'beat', rank: -1, everyMs: 100 } });
  cases.push({ name: 'beat.everyMs = NaN (to rank 1)', kind: 'barrier', target: 1, msg: { t: 'beat', rank: 2, everyMs: NaN } });
  return cases;
}

async function expectProtocolErrors(groups: RingGroup[], ops: Promise<unknown>[], target: 0 | 1, what: string, logs: string[]) {
  const settled = await withDeadline(Promise.allSettled(ops), 20_000, what);
  const [t, o] = target === 0 ? settled : [settled[1], settled[0]];
  expect(t.status, what).toBe('rejected');
  const e = (t as PromiseRejectedResult).reason as RingError;
  expect(e, String(e?.stack)).toBeInstanceOf(RingError);
  expect(e.code, e.message).toBe('RING_ERR_PROTOCOL');
  expect(e.message).toContain(`rank ${target}: protocol error: rank 2 `);
  expect(e.details).toMatchObject({ rank: target, ranks: [2] });
  expect(e.message.length, e.message).toBeLessThan(800);
  expect(e.message).not.toMatch(/[\x00-\x1f]/);
  expect(o.status, what).toBe('rejected');
  const other = (o as PromiseRejectedResult).reason as RingError;
  expect(other).toBeInstanceOf(RingError);
  expect(other.code, other.message).toBe('RING_ERR_PROTOCOL');
  expect(other.message).toMatch(new RegExp(`aborted because rank ${target} failed: .*rank 2`));
  expect(logs.join('\n')).toContain('protocol error: rank 2');
  // Both ranks still answer: later calls fail at once with the same cause.
  for (const g of groups) await expect(g.barrier()).rejects.toMatchObject({ code: 'RING_ERR_PROTOCOL' });
}

describe('a token holder (rank 2 of 3) sends hostile descriptors and control messages to live ranks', () => {
  it('the audit: an allgather descriptor with count 2^40 gives RING_ERR_PROTOCOL naming rank 2 on rank 0, the abort on rank 1, no crash', async () => {
    const logs: string[] = [];
    const ring = await ringWithImpostor(logs);
    try {
      const ops = ring.groups.map((g) => g.allgather(new Float32Array(4), { name: 'victim' }));
      ring.impostor.toRank0.send(control(descMsg({ ...HONEST.allgather, count: 2 ** 40 })));
      await expectProtocolErrors(ring.groups, ops, 0, 'count 2^40', logs);
      const e = await ops[0].catch((x: RingError) => x);
      expect((e as RingError).message).toMatch(/element count 1099511627776 for allgather \(at most \d+\)/);
    } finally {
      await ring.close();
    }
  });

  it('an allgather whose counts are each legal but whose total no array can hold fails with RING_ERR_INVALID_ARG on both real ranks, no crash', async () => {
    const logs: string[] = [];
    const ring = await ringWithImpostor(logs);
    try {
      const ops = ring.groups.map((g) => g.allgather(new Float32Array(4), { name: 'victim' }));
      ring.impostor.toRank0.send(control(descMsg({ ...HONEST.allgather, count: MAX_ELEMENTS })));
      const settled = await withDeadline(Promise.allSettled(ops), 20_000, 'allgather total');
      for (const [r, s] of settled.entries()) {
        expect(s.status).toBe('rejected');
        const e = (s as PromiseRejectedResult).reason as RingError;
        expect(e.code, e.message).toBe('RING_ERR_INVALID_ARG');
        expect(e.message).toContain(`rank ${r}: allgather: the result would have ${MAX_ELEMENTS + 8} elements`);
        expect(e.message).toContain(`rank 2: ${MAX_ELEMENTS}`);
      }
    } finally {
      await ring.close();
    }
  });

  it('hostile fields, one live ring each (about 180): RING_ERR_PROTOCOL naming rank 2 where it arrives, the abort on the other rank', async () => {
    const cases = liveCases();
    const t0 = Date.now();
    for (const c of cases) {
      const logs: string[] = [];
      const ring = await ringWithImpostor(logs, { chunkBytes: 1 << 20 });
      try {
        const ops = ring.groups.map((g) => call(g, c.kind));
        const send = (i: Impostor) => (c.target === 0 ? i.toRank0 : i.toRank1).send(control(c.msg));
        send(ring.impostor);
        await expectProtocolErrors(ring.groups, ops, c.target, c.name, logs);
      } catch (e) {
        throw new Error(`case ${c.name}: ${(e as Error).message}`, { cause: e });
      } finally {
        await ring.close();
      }
    }
    console.log(`${cases.length} live cases in ${Date.now() - t0} ms`);
    guard.check();
  }, 300_000);
});

describe('the other things peers send: rank records in the store, the tfjs engine negotiation lists', () => {
  const goodGroup = { tensors: [{ name: 'w', shape: [2, 3] }], op: 'average', compression: 'none', prescale: 1, postscale: 1 };

  it('negotiation lists: any hostile value in any field is RING_ERR_PROTOCOL naming the rank (plain data checked before decoding)', () => {
    const fields: Array<[string, (v: unknown) => unknown]> = [
      ['list', (v) => v],
      ['group', (v) => [v]],
      ['tensors', (v) => [{ ...goodGroup, tensors: v }]],
      ['tensor', (v) => [{ ...goodGroup, tensors: [v] }]],
      ['tensor name', (v) => [{ ...goodGroup, tensors: [{ name: v, shape: [1] }] }]],
      ['shape', (v) => [{ ...goodGroup, tensors: [{ name: 'w', shape: v }] }]],
      ['dimension', (v) => [{ ...goodGroup, tensors: [{ name: 'w', shape: [v] }] }]],
      ['op', (v) => [{ ...goodGroup, op: v }]],
      ['compression', (v) => [{ ...goodGroup, compression: v }]],
      ['prescale', (v) => [{ ...goodGroup, prescale: v }]],
    ];
    let refused = 0;
    let total = 0;
    for (const [field, make] of fields) {
      for (const [what, v] of VALUES) {
        // Rank 1's list is hostile; ranks 0 and 2 are honest. Each list is one MessagePack value.
        const bytes = Buffer.concat([mp([goodGroup]), mp(make(ENCODED.get(v))), mp([goodGroup])]);
        total++;
        try {
          const problem = checkMsgpack(bytes, 0, 3, bytes.byteLength);
          if (problem) throw new RingError('RING_ERR_PROTOCOL', `rank 0: protocol error: gradient negotiation: ${problem}`, {});
          const lists = validateLists(new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true }).unpackMultiple(bytes) as unknown[], 0);
          // Accepted: plain, bounded data that decide() takes as it is.
          decide(lists);
        } catch (e) {
          refused++;
          expect(e, `${field} = ${what}: ${(e as Error)?.stack}`).toBeInstanceOf(RingError);
          expect((e as RingError).code).toBe('RING_ERR_PROTOCOL');
          if (!/gradient negotiation: (more|type|forbidden|nested|truncated|64-bit|extension|a )/.test((e as Error).message)) {
            expect((e as RingError).message).toContain('rank 1 sent a malformed gradient negotiation list');
            expect((e as RingError).details.ranks).toEqual([1]);
          }
          expect((e as RingError).message.length).toBeLessThan(600);
          expect((e as RingError).message).not.toMatch(/[\x00-\x1f]/);
        }
      }
    }
    console.log(`negotiation lists: ${refused} of ${total} refused`);
    expect(refused).toBeGreaterThan(total / 2);
    guard.check();
  });

  it('rank records: any hostile value in any field is RING_ERR_PROTOCOL naming the rank whose record it is', () => {
    const good = { host: '127.0.0.1', port: 4000, size: 3, chunkBytes: 1 << 20, pid: 7, hostname: 'h', machine: 'm', tls: false, pids: 'p', protocol: 3 };
    expect(checkRecord(0, 2, { ...good, extra: 'dropped' })).toEqual(good);
    let refused = 0;
    for (const field of Object.keys(good)) {
      for (const [what, v] of VALUES) {
        try {
          checkRecord(0, 2, { ...good, [field]: v });
        } catch (e) {
          refused++;
          expect(e, `${field} = ${what}: ${(e as Error)?.stack}`).toBeInstanceOf(RingError);
          expect((e as RingError).code).toBe('RING_ERR_PROTOCOL');
          expect((e as RingError).message).toContain(`rank 0: the record of rank 2 in the rendezvous store is malformed: ${field} `);
          expect((e as RingError).details.ranks).toEqual([2]);
          expect((e as RingError).message).not.toMatch(/[\x00-\x1f]/);
        }
      }
    }
    expect(checkRecord(0, 2, { ...good, host: 'fe80::1%eth0' }).host).toBe('fe80::1%eth0');
    expect(() => checkRecord(0, 2, { ...good, host: 'a b' })).toThrow(/malformed: host 'a b'/);
    expect(() => checkRecord(0, 2, null)).toThrow(/malformed: record null/);
    console.log(`rank records: ${refused} refused`);
  });

  it('a token holder that publishes a hostile record: the real ranks fail init with RING_ERR_PROTOCOL naming it, nothing crashes', async () => {
    const token = 'records';
    const logger = { warn: () => {}, info: () => {} };
    const store = await startStoreServer({ host: '127.0.0.1', port: 0, token, worldSize: 3, logger });
    try {
      const real = [0, 1].map((rank) =>
        formRing(resolveOptions({ rank, size: 3, token, hostStore: false, store: `127.0.0.1:${store.endpoint.port}`, startTimeoutMs: 20_000, logger }, {})),
      );
      const sc = await StoreClient.connect(store.endpoint, token, 2, Date.now() + 10_000);
      await sc.set('ring/2', { host: '127.0.0.1', port: 2 ** 40, size: 3, chunkBytes: 1 << 20, pid: 1, hostname: 'x\n\x1b[2K'.repeat(1000), machine: 'm', tls: false, protocol: 3 });
      const settled = await withDeadline(Promise.allSettled(real), 30_000, 'init with a hostile record');
      for (const [r, s] of settled.entries()) {
        expect(s.status).toBe('rejected');
        const e = (s as PromiseRejectedResult).reason as RingError;
        expect(e.code, e.message).toBe('RING_ERR_PROTOCOL');
        expect(e.message).toBe(`rank ${r}: the record of rank 2 in the rendezvous store is malformed: port 1099511627776`);
      }
      sc.close();
    } finally {
      await store.close();
    }
  });
});

describe('a bug in handling a message', () => {
  it('an exception thrown while a message is handled fails the ring with RING_ERR_INTERNAL naming the peer, instead of escaping into the socket handler', async () => {
    const gs = await createLocalGroups(2, {});
    try {
      // A collective whose frame handler throws a plain TypeError (as a bug would).
      const buggy = (): Collective<undefined> => ({
        needsTable: false,
        received: false,
        start: (ctx) => ctx.send(0, 0, new Uint8Array(4)),
        onData: () => {
          throw new TypeError('boom');
        },
        result: () => undefined,
      });
      type Run = { comm: { run(d: unknown, c: Collective<undefined>): Promise<undefined> } };
      const settled = await withDeadline(
        Promise.allSettled(gs.map((g) => (g as unknown as Run).comm.run(descriptor('allgather', { dtype: 8, count: 4 }), buggy()))),
        20_000,
        'a throwing handler',
      );
      for (const s of settled) {
        const e = (s as PromiseRejectedResult).reason as RingError;
        expect(e).toBeInstanceOf(RingError);
        expect(e.code, e.message).toBe('RING_ERR_INTERNAL');
        expect(e.message).toMatch(/handling a message from rank \d failed: boom/);
      }
    } finally {
      await Promise.all(gs.map((g) => g.shutdown().catch(() => {})));
    }
  });
});
