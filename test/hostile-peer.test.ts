import type { WebSocket } from 'ws';
import { afterAll, describe, expect, it } from 'vitest';
import { RingError } from '../src/index.js';
import { closeServer, startStoreServer, StoreClient, type StoreServer } from '../src/rendezvous/store.js';
import { clientHandshake, serverHandshake } from '../src/transport/ws/auth.js';
import { Inbox } from '../src/transport/ws/inbox.js';
import { decodeMessage, encodeControl, encodeData, encodeDataHeader, KIND_DATA_HEADER, type DataHeader } from '../src/transport/wire.js';
import { connect, listen } from '../src/transport/ws/socket.js';
import { DEEP_ARRAY, Entries, HOSTILE, HUGE_ARRAY, mp, mutateBytes, mutateObject, prng, prototypeGuard, Raw } from './helpers/hostile.js';
import { ringWithImpostor, type Impostor } from './helpers/impostor.js';
import { withDeadline } from './helpers/reference.js';

/**
 * Hostile peers over real sockets. An impostor that holds the job token (so it passes the
 * handshake) takes rank 2's place in a live 3-rank ring, behaves until the ring is formed, then
 * sends one hostile frame. The rank it targets must fail its operation with RING_ERR_PROTOCOL
 * naming rank 2, the other real rank must learn through the abort (a typed error too), and nobody
 * may crash or hang. The rendezvous store gets the same treatment from a client with the token.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
console.log(`hostile-peer seed ${SEED} (rerun with FUZZ_SEED=${SEED})`);
const guard = prototypeGuard();
afterAll(() => guard.check());

const CHUNK = 64; // 16 float32 per frame: rank 0's first segment from rank 2 is 22 elements, 2 frames
const COUNT = 64;
const SEQ = 1; // seq 0 is the ring's start-up barrier
const victimDesc = { kind: 'allreduce', op: 'sum', dtype: 1, count: COUNT, name: 'victim', root: -1, compression: 'none' };
const control = (m: unknown) => Buffer.concat([Buffer.from([0]), mp(m)]);
const frame = (h: Partial<DataHeader>, bytes = 64) => encodeData({ seq: SEQ, step: 0, chunk: 0, codec: 0, scale: 1, ...h }, Buffer.alloc(bytes));
const ownDesc = () => encodeControl({ t: 'desc', seq: SEQ, origin: 2, d: victimDesc });

type Case = { name: string; target: 0 | 1; send(i: Impostor): void };
const to0 = (name: string, ...msgs: Array<Buffer | string>): Case => ({
  name,
  target: 0,
  send: (i) => msgs.forEach((m) => i.toRank0.send(m, { binary: typeof m !== 'string' })),
});
const to1 = (name: string, ...msgs: Buffer[]): Case => ({ name, target: 1, send: (i) => msgs.forEach((m) => i.toRank1.send(m)) });

const withLength = (b: Buffer, n: number) => (b.writeUInt32LE(n >>> 0, 20), b);
const NAMED: Case[] = [
  to0('truncated data header', ownDesc(), frame({}).subarray(0, 13)),
  to0('empty message', ownDesc(), Buffer.alloc(0)),
  to0('length past the buffer', ownDesc(), withLength(frame({}), 1000)),
  to0('length short of the payload', ownDesc(), withLength(frame({}), 8)),
  to0('header-only frame, then a payload of another length', ownDesc(), encodeDataHeader({ seq: SEQ, step: 0, chunk: 0, codec: 0, scale: 1 }, 1e9, KIND_DATA_HEADER), Buffer.alloc(64)),
  to0('oversized message (over maxPayload)', ownDesc(), frame({}, 1 << 16)),
  to0('sequence number far ahead', ownDesc(), frame({ seq: 5000 })),
  to0('sequence number 2^32-1', ownDesc(), frame({ seq: 2 ** 32 - 1 })),
  to0('data before its descriptor', frame({})),
  to0('data for a later operation without its descriptor', ownDesc(), frame({ seq: SEQ + 1 })),
  to0('step past the last hop', ownDesc(), frame({ step: 4 })),
  to0('step 2^32-1', ownDesc(), frame({ step: 2 ** 32 - 1 })),
  to0('chunk index out of order', ownDesc(), frame({ chunk: 1 })),
  to0('chunk index out of range', ownDesc(), frame({ chunk: 1e9 })),
  to0('wire codec 7', ownDesc(), frame({ codec: 7 })),
  to0('fp16 frame in a raw operation', ownDesc(), frame({ codec: 1 }, 32)),
  to0('payload of the wrong size for its chunk', ownDesc(), frame({}, 12)),
  to0('duplicate chunk', ownDesc(), frame({}), frame({})),
  to0('unknown message kind', ownDesc(), Buffer.from([9, 1, 2, 3])),
  to0('text frame', ownDesc(), 'hello'),
  {
    name: 'invalid WebSocket opcode',
    target: 0,
    send: (i) => (i.toRank0 as unknown as { _socket: { write(b: Buffer): void } })._socket.write(Buffer.from([0x83, 0x00])),
  },
  to0('descriptor with dtype code 99', control({ t: 'desc', seq: SEQ, origin: 2, d: { ...victimDesc, dtype: 99 } })),
  to0('descriptor with a wrong-typed count', control({ t: 'desc', seq: SEQ, origin: 2, d: { ...victimDesc, count: '64' } })),
  to0('descriptor with origin = the receiver', control({ t: 'desc', seq: SEQ, origin: 0, d: victimDesc })),
  to0('descriptor sent twice', ownDesc(), ownDesc()),
  to0('descriptor with a __proto__ key', control(new Entries([['t', 'desc'], ['seq', SEQ], ['origin', 2], ['d', victimDesc], ['__proto__', { polluted: 1 }]]))),
  to0('descriptor with constructor.prototype', control({ t: 'desc', seq: SEQ, origin: 2, d: { ...victimDesc, constructor: { prototype: { polluted: 1 } } } })),
  to0('abort with error code __proto__', control({ t: 'abort', origin: 2, error: { code: '__proto__', message: 'x' } })),
  to0('abort with error code constructor', control({ t: 'abort', origin: 2, error: { code: 'constructor', message: 'x' } })),
  to0('abort from a rank outside the ring', control({ t: 'abort', origin: 7, error: { code: 'RING_ERR_TIMEOUT', message: 'x' } })),
  to0('bye in rank 1\'s name', control({ t: 'bye', rank: 1 })),
  to0('5000-deep nesting', control(new Entries([['t', 'desc'], ['seq', DEEP_ARRAY]]))),
  to0('array header of 2^32-1 elements', control(new Entries([['t', 'desc'], ['d', HUGE_ARRAY]]))),
  to0('64-bit integer sequence number', control({ t: 'desc', seq: 1n, origin: 2, d: victimDesc })),
  to0('msgpackr record definition', Buffer.from([0, 0xd4, 0x72, 0x40, 0x91, 0xa1, 0x74, 0x40, 0xa4, 0x64, 0x65, 0x73, 0x63])),
  to0('structured-clone cycle', control({ t: 'abort', origin: 2, error: new Raw(Buffer.from([0xd6, 0x69, 0, 0, 0, 1, 0x91, 0xd6, 0x70, 0, 0, 0, 1])) })),
  to0('unknown control message', control({ t: 'hello' })),
  to1('data against the ring direction', frame({})),
  to1('descriptor against the ring direction', ownDesc()),
  to1('garbage control message', Buffer.from([0, 0xc1, 0xc1])),
];

/** Seeded variants of frames that can never be valid here. */
function randomCases(n: number): Case[] {
  const rng = prng(SEED);
  return Array.from({ length: n }, (_, k) => {
    const kind = rng.int(6);
    if (kind === 0) return to0(`random #${k}: step ${4 + rng.int(1000)}`, ownDesc(), frame({ step: 4 + rng.int(1000) }));
    if (kind === 1) return to0(`random #${k}: codec`, ownDesc(), frame({ codec: 1 + rng.int(255) }, 64));
    if (kind === 2) return to0(`random #${k}: truncated header`, ownDesc(), frame({}).subarray(0, 1 + rng.int(23)));
    if (kind === 3) return to0(`random #${k}: message kind`, ownDesc(), Buffer.from([3 + rng.int(253), ...Array.from({ length: rng.int(40) }, () => rng.int(256))]));
    if (kind === 4) return to0(`random #${k}: descriptor field`, control({ t: 'desc', seq: SEQ, origin: 2, d: { ...victimDesc, [rng.pick(['kind', 'op', 'dtype', 'compression'])]: rng.pick(HOSTILE.slice(20, 30)) } }));
    const junk = mutateBytes(rng, Buffer.from([0, ...Array.from({ length: 1 + rng.int(30) }, () => 0xc1)]), 1);
    return to0(`random #${k}: bytes ${junk.toString('hex').slice(0, 24)}`, ownDesc(), junk[0] === 0 ? junk : Buffer.concat([Buffer.from([0, 0xc1]), junk]));
  });
}

describe('an impostor with the job token in a live 3-rank ring', () => {
  it.each([...NAMED, ...randomCases(12)])('$name: the target fails with a protocol error naming rank 2, the other rank is told', async (c) => {
    const logs: string[] = [];
    const ring = await ringWithImpostor(logs);
    try {
      const ops = ring.groups.map((g) => g.allreduce(new Float32Array(COUNT).fill(g.rank + 1), { name: 'victim' }));
      c.send(ring.impostor);
      const settled = await withDeadline(Promise.allSettled(ops), 10_000, c.name);
      const [target, other] = c.target === 0 ? [settled[0], settled[1]] : [settled[1], settled[0]];
      expect(target.status, c.name).toBe('rejected');
      const e = (target as PromiseRejectedResult).reason as RingError;
      expect(e, String(e?.stack)).toBeInstanceOf(RingError);
      expect(e.code, e.message).toBe('RING_ERR_PROTOCOL');
      expect(e.message).toContain(`rank ${c.target}: protocol error: rank 2 `);
      expect(e.details).toMatchObject({ rank: c.target, ranks: [2] });
      expect(other.status).toBe('rejected');
      const o = (other as PromiseRejectedResult).reason as RingError;
      expect(o).toBeInstanceOf(RingError);
      expect(o.code, o.message).toBe('RING_ERR_PROTOCOL');
      expect(o.message).toMatch(new RegExp(`aborted because rank ${c.target} failed: .*rank 2`));
      // The target says what happened where a user sees it.
      expect(logs.join('\n')).toContain(`protocol error: rank 2`);
      // Later calls fail at once with the same cause, on both ranks.
      for (const g of ring.groups) await expect(g.barrier()).rejects.toMatchObject({ code: 'RING_ERR_PROTOCOL' });
    } finally {
      await ring.close();
    }
    guard.check();
  });
});

describe('the rendezvous store under a client with the job token', () => {
  let store: StoreServer;
  const logs: string[] = [];
  const token = 'store-fuzz-token';
  afterAll(async () => store?.close());

  async function client() {
    const inbox = await connect(store.endpoint, 1 << 20, Date.now() + 5000, 'store');
    await clientHandshake(inbox, { token, rank: 0, serverId: 'store', timeoutMs: 5000, peer: 'the store' });
    const replies: Array<Record<string, unknown>> = [];
    let onReply: (() => void) | undefined;
    let closed = false;
    inbox.drain((data) => {
      const d = decodeMessage(data, 'the store');
      if (d.kind === 'control') replies.push(d.msg);
      onReply?.();
    });
    inbox.socket.on('close', () => {
      closed = true;
      onReply?.();
    });
    return {
      ws: inbox.socket,
      replies,
      get closed() {
        return closed;
      },
      /** Resolves once a reply with `id` arrived, or the store closed the connection. */
      until(id: number) {
        return new Promise<void>((resolve) => {
          const check = () => (closed || replies.some((r) => r.id === id) ? resolve() : undefined);
          onReply = check;
          check();
        });
      },
    };
  }

  it('mutated requests get a reply, block (a get of missing keys), or close that connection with a logged protocol error; the store keeps serving', async () => {
    store = await startStoreServer({ host: '127.0.0.1', port: 0, token, worldSize: 2, logger: { warn: (m) => logs.push(m), info: () => {} } });
    const rng = prng(SEED ^ 0x5703e);
    const valid = [
      { t: 'set', id: 1, key: 'ring/0', value: { host: '127.0.0.1', port: 4000, size: 2, chunkBytes: 1024, pid: 1, hostname: 'h' } },
      { t: 'get', id: 1, keys: ['ring/0'], timeoutMs: 1000 },
      { t: 'set', id: 1, key: 'ring/0', value: { host: '127.0.0.1', port: 4000, size: 2, chunkBytes: 1024, pid: 1, hostname: 'h' } },
    ];
    const tally = { replied: 0, blocked: 0, closed: 0 };
    let c = await client();
    const N = 400;
    for (let i = 0; i < N; i++) {
      const base = rng.pick(valid);
      const buf = rng.chance(0.6) ? control(mutateObject(rng, base)) : rng.chance(0.5) ? mutateBytes(rng, encodeControl(base), 1) : control({ ...base, value: rng.pick(HOSTILE) });
      const where = `seed ${SEED} store case ${i}: ${buf.subarray(0, 48).toString('hex')}`;
      const before = c.replies.length;
      c.ws.send(buf);
      // A well-formed request behind it: once it is answered, the hostile one has been handled.
      const pingId = 1_000_000 + i;
      c.ws.send(encodeControl({ t: 'set', id: pingId, key: `ping/${i}`, value: i }));
      await withDeadline(c.until(pingId), 5000, where);
      if (c.closed) {
        tally.closed++;
        expect(logs.at(-1), where).toMatch(/rendezvous store: closing rank 0 \(store client 127\.0\.0\.1:\d+\): /);
        c = await client();
        continue;
      }
      const answers = c.replies.slice(before).filter((r) => r.id !== pingId);
      for (const r of answers) {
        expect(['ok', 'err'], where).toContain(r.t);
        if (r.t === 'err') expect(typeof r.message, where).toBe('string');
      }
      if (answers.length > 0) tally.replied++;
      else tally.blocked++;
      if (i % 50 === 0) guard.check();
    }
    console.log(`store: ${N} hostile requests: ${JSON.stringify(tally)}`);
    expect(tally.closed).toBeGreaterThan(N / 10);
    expect(tally.replied).toBeGreaterThan(N / 10);
    // Still serving: a real client sets and reads.
    const sc = await StoreClient.connect(store.endpoint, token, 1, Date.now() + 5000);
    await sc.set('after', { ok: true });
    expect(await sc.get(['after', `ping/${N - 1}`], 1000)).toEqual([{ ok: true }, N - 1]);
    sc.close();
    c.ws.terminate();
    guard.check();
  });

  it('a hostile store: the client rejects with a typed error naming the store', async () => {
    const rng = prng(SEED ^ 0xc11e);
    const { server, endpoint } = await listen('127.0.0.1', 0, 1 << 20);
    let reply: (req: Record<string, unknown>) => Buffer = () => Buffer.alloc(0);
    server.on('connection', (ws: WebSocket) => {
      const inbox = new Inbox(ws);
      serverHandshake(inbox, { token, serverId: 'store', challenge: { rank: -1, role: 'store' }, admit: () => undefined, timeoutMs: 5000, peer: 'client' }).then(
        () => inbox.drain((data) => ws.send(reply((decodeMessage(data, 'client') as { msg: Record<string, unknown> }).msg))),
        () => ws.terminate(),
      );
    });
    const tally = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      reply = (req) => {
        const ok = { t: 'ok', id: req.id, values: [{ host: '127.0.0.1', port: 1 }] };
        return rng.chance(0.5) ? control(mutateObject(rng, ok)) : mutateBytes(rng, encodeControl(ok), 1);
      };
      const sc = await StoreClient.connect(endpoint, token, 0, Date.now() + 5000);
      const r = await withDeadline(
        sc.get(['k'], 1000).then(
          () => 'resolved',
          (e: RingError) => {
            expect(e).toBeInstanceOf(RingError);
            expect(['RING_ERR_PROTOCOL', 'RING_ERR_RENDEZVOUS', 'RING_ERR_TIMEOUT']).toContain(e.code);
            if (e.code === 'RING_ERR_PROTOCOL') expect(e.message).toMatch(new RegExp(`the rendezvous store at (ws://)?127\\.0\\.0\\.1:${endpoint.port}`));
            return e.code;
          },
        ),
        5000,
        `hostile store case ${i}`,
      );
      tally.set(r, (tally.get(r) ?? 0) + 1);
      sc.close();
    }
    console.log(`hostile store: 60 replies: ${[...tally].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    expect(tally.get('RING_ERR_PROTOCOL') ?? 0).toBeGreaterThan(10);
    await closeServer(server);
    guard.check();
  });
});
