import { WebSocket } from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { createLocalGroups, RingError, type RingGroup } from '../src/index.js';
import { clientHandshake } from '../src/transport/ws/auth.js';
import { Inbox } from '../src/transport/ws/inbox.js';
import { encodeControl } from '../src/transport/wire.js';
import { withDeadline } from './helpers/reference.js';

/** Collects what a rank logs, so tests can see refusals. */
function capture() {
  const lines: string[] = [];
  return { lines, logger: { warn: (m: string) => lines.push(m), info: (m: string) => lines.push(m) } };
}

let open: RingGroup[] = [];
afterEach(async () => {
  await Promise.all(open.map((g) => g.shutdown().catch(() => {})));
  open = [];
});

async function groups(n: number, transport: 'memory' | 'ws', extra: object = {}) {
  const gs = await createLocalGroups(n, { transport, timeoutMs: 20_000, chunkBytes: 64, ...extra });
  open.push(...gs);
  return gs;
}

/** Every promise must reject with a RingError of `code`; returns the errors. */
async function allReject(ps: Promise<unknown>[], code: string): Promise<RingError[]> {
  const settled = await withDeadline(Promise.allSettled(ps), 10_000, 'collective');
  return settled.map((s, r) => {
    expect(s.status, `rank ${r} should have failed`).toBe('rejected');
    const e = (s as PromiseRejectedResult).reason;
    expect(e).toBeInstanceOf(RingError);
    expect(e.code, e.message).toBe(code);
    return e as RingError;
  });
}

describe.each(['memory', 'ws'] as const)('mismatches over %s links', (transport) => {
  it('element count: typed error on every rank naming the ranks and the field; the ring stays usable', async () => {
    const gs = await groups(3, transport);
    const errs = await allReject(
      gs.map((g) => g.allreduce(new Float32Array(g.rank === 1 ? 5 : 7), { name: 'w' })),
      'RING_ERR_MISMATCH',
    );
    for (const [r, e] of errs.entries()) {
      expect(e.message).toContain(`rank ${r}:`);
      expect(e.message).toMatch(/allreduce #\d+ 'w': ranks disagree on the element count \(ranks 0,2: 7; rank 1: 5\)/);
      expect(e.details).toMatchObject({ field: 'count', ranks: [1], op: 'allreduce' });
    }
    const ok = await withDeadline(Promise.all(gs.map((g) => g.allreduce(Float32Array.of(g.rank + 1)))), 10_000, 'after mismatch');
    expect(ok.map((x) => x[0])).toEqual([6, 6, 6]);
  });

  it('reduction op', async () => {
    const gs = await groups(2, transport);
    const errs = await allReject(
      gs.map((g) => g.allreduce(new Float32Array(4), { op: g.rank === 0 ? 'sum' : 'max' })),
      'RING_ERR_MISMATCH',
    );
    expect(errs[1].message).toContain("ranks disagree on the reduction op (rank 0: 'sum'; rank 1: 'max')");
  });

  it('dtype', async () => {
    const gs = await groups(4, transport);
    const errs = await allReject(
      gs.map((g) => g.allreduce(g.rank === 3 ? new Int32Array(10) : new Float32Array(10))),
      'RING_ERR_MISMATCH',
    );
    expect(errs[0].message).toContain('ranks disagree on the dtype (ranks 0,1,2: float32; rank 3: int32)');
  });

  it('collective kind, name, broadcast root', async () => {
    const gs = await groups(3, transport);
    let errs = await allReject(
      gs.map((g) => (g.rank === 2 ? g.broadcast(new Float32Array(3)) : g.allreduce(new Float32Array(3)))),
      'RING_ERR_MISMATCH',
    );
    expect(errs[0].message).toContain("ranks disagree on the collective (ranks 0,1: 'allreduce'; rank 2: 'broadcast')");
    errs = await allReject(gs.map((g) => g.allgather(new Float32Array(g.rank), { name: `g${g.rank}` })), 'RING_ERR_MISMATCH');
    expect(errs[0].details.field).toBe('name');
    errs = await allReject(gs.map((g) => g.broadcast(new Float32Array(3), { root: g.rank === 0 ? 1 : 0 })), 'RING_ERR_MISMATCH');
    expect(errs[2].message).toContain('root (rank 0: 1; ranks 1,2: 0)');
  });
});

describe('invalid arguments', () => {
  it('are typed errors naming the option', async () => {
    const [g] = await groups(1, 'memory');
    expect(() => g.allreduce([1, 2] as never)).toThrow(/allreduce\(x\): x must be a Float32Array.*got Array/);
    expect(() => g.allreduce(new Float32Array(1), { op: 'mean' as never })).toThrow(/options.op must be one of/);
    expect(() => g.broadcast(new Float32Array(1), { root: 3 })).toThrow(/options.root must be an integer rank in 0..0, got 3/);
    expect(() => g.allreduce(new Float32Array(1), { name: 3 as never })).toThrow(/options.name must be a string/);
    try {
      g.allreduce(null as never);
    } catch (e) {
      expect((e as RingError).code).toBe('RING_ERR_INVALID_ARG');
    }
    await expect(createLocalGroups(2, { chunkBytes: -1 })).rejects.toThrow(/options.chunkBytes must be an integer >= 8, got -1/);
  });
});

describe('failures over ws links', () => {
  it('a rank that never joins an operation: the others time out naming it, and every rank learns', async () => {
    const gs = await groups(3, 'ws', { timeoutMs: 400 });
    const t0 = Date.now();
    const errs = await allReject([gs[0].allreduce(new Float32Array(100)), gs[1].allreduce(new Float32Array(100))], 'RING_ERR_TIMEOUT');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(errs.some((e) => /allreduce #1 timed out after 400 ms: ranks 2 have not reached it/.test(e.message))).toBe(true);
    // Rank 2 was told (abort travels around the ring): its next call fails at once with the cause.
    await expect(gs[2].allreduce(new Float32Array(100))).rejects.toMatchObject({ code: 'RING_ERR_TIMEOUT' });
  });

  it('a neighbour that disappears mid-operation rejects pending operations promptly', async () => {
    const gs = await groups(3, 'ws');
    const pending = [gs[0].allreduce(new Float32Array(1 << 16)), gs[1].allreduce(new Float32Array(1 << 16))];
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    await gs[2].shutdown();
    const errs = await allReject(pending, 'RING_ERR_PEER_LOST');
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(errs.map((e) => e.message).join('\n')).toMatch(/rank 2 \((left|right) neighbour\) called shutdown\(\) while allreduce #1 was pending/);
  });

  it('a forged connection without the token is refused and logged; the job completes exactly', async () => {
    const cap = capture();
    const gs = await groups(2, 'ws', { logger: cap.logger });
    const [host, port] = gs[0].address!.split(':');
    const url = `ws://${host}:${port}/`;
    const dial = async () => {
      const ws = new WebSocket(url);
      const inbox = new Inbox(ws);
      await new Promise((res, rej) => (ws.once('open', res), ws.once('error', rej)));
      return { ws, inbox };
    };
    // 1. Wrong token.
    const a = await dial();
    await expect(clientHandshake(a.inbox, { token: 'wrong', rank: 1, serverId: 'rank:0', timeoutMs: 2000, peer: 'rank 0' })).rejects.toMatchObject({
      code: 'RING_ERR_AUTH',
    });
    // 2. Random bytes instead of an auth message.
    const b = await dial();
    b.ws.send(Buffer.from([0, 1, 2, 3, 255, 254]));
    await new Promise((res) => b.ws.once('close', res));
    // 3. A well-formed auth message with a made-up MAC (a replayed one would fail the same way: fresh nonce).
    const c = await dial();
    await c.inbox.next(2000);
    c.ws.send(encodeControl({ t: 'auth', nonce: Buffer.alloc(32), rank: 1, mac: Buffer.alloc(32) }));
    const closed = await new Promise<number>((res) => c.ws.once('close', (code) => res(code)));
    expect(closed).toBe(1008);
    // 4. A plain HTTP request.
    const res = await fetch(`http://${host}:${port}/`).catch((e) => e);
    expect(res instanceof Error || res.status === 426).toBe(true);

    await new Promise((r) => setTimeout(r, 100));
    expect(cap.lines.filter((l) => l.includes('rank 0: refused a connection')).length).toBeGreaterThanOrEqual(3);
    expect(cap.lines.join('\n')).toMatch(/failed authentication \(wrong job token\)/);
    const out = await withDeadline(Promise.all(gs.map((g) => g.allreduce(Int32Array.of(g.rank + 1, 10)))), 10_000, 'after forgery');
    expect(out.map((x) => Array.from(x))).toEqual([
      [3, 20],
      [3, 20],
    ]);
  });
});
