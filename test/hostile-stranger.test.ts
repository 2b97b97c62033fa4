import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import type { WebSocket } from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { RingError } from '../src/errors.js';
import { resolveOptions } from '../src/options.js';
import { formRing } from '../src/rendezvous/ring.js';
import { startStoreServer, StoreClient } from '../src/rendezvous/store.js';
import { clientHandshake, connectAuthenticated, serverHandshake } from '../src/transport/ws/auth.js';
import { MAX_PENDING, PENDING_MAX_PAYLOAD, PENDING_MS, TRY_AGAIN } from '../src/transport/ws/gate.js';
import { Inbox } from '../src/transport/ws/inbox.js';
import { closeWsServer, connect, listen } from '../src/transport/ws/socket.js';
import { WsTransport } from '../src/transport/ws/transport.js';
import { encodeControl } from '../src/transport/wire.js';
import { freePort, killStarted, Proc, ringrun } from './helpers/procs.js';
import { withDeadline } from './helpers/reference.js';
import { root } from './helpers/run.js';
import { closeCodeIn, cpuMs, fdCount, frame, frameHeader, idle, rssMB, upgrade } from './helpers/stranger.js';

/**
 * Issue 14, rows 1, 2, 3 and 11: a stranger on the network, without the job token, against the
 * servers of a job (the rendezvous store and a rank's port), over real sockets on 127.0.0.1. Until
 * its MAC verifies, a connection is pending (src/transport/ws/gate.ts): it has PENDING_MS (2 s)
 * from its TCP accept, messages of at most PENDING_MAX_PAYLOAD (4 KiB), one message, and at most
 * MAX_PENDING (128) of them wait per server. Times are measured with this process's clock, with
 * generous bounds: the suite runs on loaded 2-core machines.
 */

afterEach(killStarted);

const logger = (lines: string[]) => ({ warn: (m: string) => lines.push(m), info: () => {} });
const TOKEN = 'hostile-stranger-token';
const targetFixture = join(root, 'test', 'fixtures', 'hostile-target.mjs');

/** test/fixtures/hostile-target.mjs: a store and a rank port in a process of their own. */
async function target(): Promise<{ proc: Proc; pid: number; store: number; rank: number }> {
  const proc = new Proc(process.execPath, [targetFixture], { TOKEN }, 'target');
  const ready = await proc.waitFor(() => proc.events.find((e) => e.ev === 'ready'), 20_000, 'target ready');
  const r = ready as unknown as { pid: number; store: number; rank: number };
  return { proc, pid: r.pid, store: r.store, rank: r.rank };
}

/** A 1 MB MessagePack map of 120,000 keys, as a control message (issue 14, row 11). */
function wideMap(extra: Record<string, unknown> = {}): Buffer {
  const o: Record<string, unknown> = { t: 'auth', ...extra };
  for (let i = 0; i < 120_000; i++) o[`k${i}`] = 1;
  return Buffer.concat([Buffer.from([0]), new Packr({ useRecords: false, variableMapSize: true }).pack(o)]);
}

describe('row 1: a stranger\'s idle connection holds nothing open', () => {
  it('the store and a rank port drop idle and silent connections after PENDING_MS, and close at once with strangers connected', async () => {
    const lines: string[] = [];
    const store = await startStoreServer({ host: '127.0.0.1', port: 0, token: TOKEN, worldSize: 2, logger: logger(lines) });
    const transport = new WsTransport({ rank: 0, token: TOKEN, host: '127.0.0.1', maxPayload: 1 << 20, logger: logger(lines) });
    const listener = await transport.listen({ admit: () => 'nobody', accepted: () => {} });
    try {
      const ports = [store.endpoint.port, listener.address.port];
      // An idle TCP connection and a silent WebSocket (upgraded, then nothing) on each.
      const t0 = Date.now();
      const strangers = [...(await Promise.all(ports.map((p) => idle(p)))), ...(await Promise.all(ports.map((p) => upgrade(p))))];
      const closedAt = await withDeadline(Promise.all(strangers.map((s) => s.closed)), PENDING_MS + 8000, 'strangers dropped');
      const after = closedAt.map((t) => t - t0);
      console.log(`[row 1] idle/silent connections closed by the servers after ${after.join(', ')} ms (PENDING_MS ${PENDING_MS})`);
      for (const ms of after) expect(ms).toBeGreaterThanOrEqual(PENDING_MS - 100);
      expect(lines.filter((l) => l.includes(`did not authenticate within ${PENDING_MS / 1000} s`)).length).toBe(4);

      // Closing a server with strangers still connected does not wait for them.
      const more = await Promise.all(ports.map((p) => idle(p)));
      const c0 = Date.now();
      await withDeadline(Promise.all([store.close(), listener.close()]), 10_000, 'close with idle connections');
      const closeMs = Date.now() - c0;
      console.log(`[row 1] store and rank port closed in ${closeMs} ms with an idle stranger each`);
      expect(closeMs).toBeLessThan(1500);
      await withDeadline(Promise.all(more.map((s) => s.closed)), 2000, 'strangers cut at close');
    } finally {
      await store.close();
      await listener.close();
    }
  });

  it('a rank 0 that hosts the store fails at its start timeout, idle stranger or not', async () => {
    const port = await freePort();
    const lines: string[] = [];
    const startTimeoutMs = 1500;
    const t0 = Date.now();
    const formed = formRing(resolveOptions({ rank: 0, size: 2, token: TOKEN, store: `127.0.0.1:${port}`, hostStore: true, startTimeoutMs, logger: logger(lines) }, {}));
    const outcome = formed.then(
      () => undefined,
      (e: RingError) => e,
    );
    // The stranger connects as soon as the store listens, and stays.
    let stranger: Awaited<ReturnType<typeof idle>> | undefined;
    for (let i = 0; i < 200 && !stranger; i++) {
      stranger = await idle(port).catch(() => undefined);
      if (!stranger) await new Promise((r) => setTimeout(r, 10));
    }
    expect(stranger, 'the store listened').toBeDefined();
    const e = await withDeadline(outcome, startTimeoutMs + 15_000, 'rank 0 gives up');
    const ms = Date.now() - t0;
    console.log(`[row 1] rank 0 with an idle stranger on its store gave up after ${ms} ms (start timeout ${startTimeoutMs} ms): ${e?.message}`);
    expect(e).toBeInstanceOf(RingError);
    expect(e!.code).toBe('RING_ERR_TIMEOUT');
    expect(e!.details).toMatchObject({ rank: 0, ranks: [1] });
    expect(ms).toBeLessThan(startTimeoutMs + 5000);
    stranger!.socket.destroy();
  });

  it('ringrun exits within seconds of its ranks finishing, with idle strangers on its store and on a rank', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rr-stranger-'));
    const stop = join(dir, 'stop');
    // bench/hostile-net.mjs --rank: forms the ring, waits for EXIT_FILE, all-reduces, says 'done'.
    const rank = [process.execPath, join(root, 'bench', 'hostile-net.mjs'), '--rank'];
    const job = new Proc(process.execPath, [ringrun, '-np', '2', ...rank], { EXIT_FILE: stop }, 'ringrun');
    try {
      await job.waitFor(() => job.of('ready').length === 2, 30_000, 'ranks ready');
      const r0 = job.events.find((e) => e.ev === 'ready' && e.rank === 0) as unknown as { store: string; address: string };
      const port = (a: string) => Number(a.slice(a.lastIndexOf(':') + 1));
      const strangers = await Promise.all([idle(port(r0.store)), idle(port(r0.address))]);
      writeFileSync(stop, '');
      await job.waitFor(() => job.of('done').length === 2, 30_000, 'ranks done');
      const doneAt = Date.now();
      const exit = await job.waitFor(() => job.exit, 30_000, 'ringrun exits');
      console.log(`[row 1] ringrun exited ${exit.at - doneAt} ms after its last rank was done (an idle stranger on its store and on rank 0)`);
      expect(exit.code, job.stderr).toBe(0);
      expect(job.events.filter((e) => e.ev === 'done').every((e) => (e as unknown as { ok: boolean }).ok)).toBe(true);
      expect(exit.at - doneAt).toBeLessThan(5000);
      strangers.forEach((s) => s.socket.destroy());
    } finally {
      job.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('row 2: before the MAC verifies, a connection gets 4 KiB and one message', () => {
  it('a frame over PENDING_MAX_PAYLOAD, or a second message, closes the connection at once; the job\'s own handshake still works', async () => {
    const lines: string[] = [];
    const store = await startStoreServer({ host: '127.0.0.1', port: 0, token: TOKEN, worldSize: 2, logger: logger(lines) });
    try {
      const port = store.endpoint.port;
      const big = await upgrade(port);
      const t0 = Date.now();
      big.socket.write(frameHeader(PENDING_MAX_PAYLOAD + 1));
      await withDeadline(big.closed, 3000, 'closed after an oversized frame header');
      expect(Date.now() - t0).toBeLessThan(PENDING_MS);
      expect(closeCodeIn(big.after)).toBe(1009); // Message Too Big (ws says so before the gate cuts it)

      const two = await upgrade(port);
      const t1 = Date.now();
      two.socket.write(Buffer.concat([frame(Buffer.from([0, 0xc0])), frame(Buffer.from([0, 0xc0]))]));
      await withDeadline(two.closed, 3000, 'closed after two messages');
      expect(Date.now() - t1).toBeLessThan(PENDING_MS);

      expect(lines.some((l) => l.includes(`sent a message over ${PENDING_MAX_PAYLOAD} bytes before authenticating`))).toBe(true);
      // The job's own client: the limits end where the MAC verifies (a 64 KiB value after it).
      const sc = await StoreClient.connect(store.endpoint, TOKEN, 1, Date.now() + 5000);
      await sc.set('big', 'x'.repeat(64 << 10));
      expect(((await sc.get(['big'], 1000))[0] as string).length).toBe(64 << 10);
      sc.close();
    } finally {
      await store.close();
    }
  });

  it('300 connections each sending 1 MiB of a frame cost the server process under 50 MB, and each is closed', async () => {
    const t = await target();
    try {
      const body = Buffer.alloc((1 << 20) - 1, 0x61);
      const before = rssMB(t.pid);
      const closed: Promise<number>[] = [];
      for (let i = 0; i < 300; i++) {
        const u = await upgrade(i % 2 ? t.rank : t.store);
        expect(u.ok).toBe(true);
        u.socket.write(frameHeader(1 << 20));
        u.socket.write(body);
        closed.push(u.closed);
      }
      await withDeadline(Promise.all(closed), 20_000, 'every connection closed');
      const after = rssMB(t.pid);
      console.log(`[row 2] 300 x 1 MiB frames before authenticating: server RSS ${before.toFixed(0)} -> ${after.toFixed(0)} MB`);
      expect(after - before).toBeLessThan(50);
    } finally {
      t.proc.kill();
    }
  });
});

describe('row 3: pending connections are capped; out of file descriptors is an error', () => {
  it(`1,000 idle connections: at most ${MAX_PENDING} held per server, a rank still gets in meanwhile, and every one is closed`, async () => {
    const t = await target();
    const strangers: Array<Awaited<ReturnType<typeof idle>>> = [];
    try {
      const base = fdCount(t.pid);
      let joined: Promise<StoreClient> | undefined;
      let most = 0;
      for (let i = 0; i < 1000; i++) {
        strangers.push(await idle(i % 2 ? t.rank : t.store));
        if (i === 600) joined = StoreClient.connect({ host: '127.0.0.1', port: t.store }, TOKEN, 0, Date.now() + 15_000);
        if (i % 50 === 49) most = Math.max(most, fdCount(t.pid));
      }
      console.log(`[row 3] 1,000 idle connections (500 per server): the server's fds ${base} -> at most ${most}`);
      expect(most).toBeLessThanOrEqual(base + 2 * MAX_PENDING + 16);
      const sc = await withDeadline(joined!, 20_000, 'a rank joins during the flood');
      await sc.set('during', 1);
      expect(await sc.get(['during'], 1000)).toEqual([1]);
      sc.close();
      await withDeadline(Promise.all(strangers.map((s) => s.closed)), PENDING_MS + 10_000, 'every stranger closed');
      expect(fdCount(t.pid)).toBeLessThanOrEqual(base + 4);
    } finally {
      strangers.forEach((s) => s.socket.destroy());
      t.proc.kill();
    }
  });

  it('a client the gate dropped ("try again") tries again; one refused for its token does not', async () => {
    const { server, endpoint } = await listen('127.0.0.1', 0, 1 << 20);
    let n = 0;
    server.on('connection', (ws: WebSocket) => {
      const inbox = new Inbox(ws);
      if (++n <= 2) return ws.close(TRY_AGAIN, 'try again');
      serverHandshake(inbox, { token: TOKEN, serverId: 'store', challenge: { rank: -1, role: 'store' }, admit: () => undefined, timeoutMs: 5000, peer: 'client' }).catch(() =>
        ws.close(1008),
      );
    });
    try {
      const o = { token: TOKEN, rank: 0, serverId: 'store', timeoutMs: 5000, peer: 'server' };
      const inbox = await connectAuthenticated(endpoint, 1 << 20, Date.now() + 10_000, 'server', undefined, '/', o);
      expect(n).toBe(3);
      inbox.socket.terminate();
      const wrong = connectAuthenticated(endpoint, 1 << 20, Date.now() + 10_000, 'server', undefined, '/', { ...o, token: 'wrong' });
      await expect(wrong).rejects.toMatchObject({ code: 'RING_ERR_AUTH' });
      expect(n).toBe(4);
    } finally {
      await closeWsServer(server);
    }
  });

  it('an authentication that waited unread while the server was busy past PENDING_MS is still admitted', async () => {
    const store = await startStoreServer({ host: '127.0.0.1', port: 0, token: TOKEN, worldSize: 2, logger: logger([]) });
    try {
      // The client's 'auth' leaves; then this process (the server's too) is busy for longer than
      // PENDING_MS before it reads it: the deadline first looks at what arrived meanwhile.
      const inbox = await connect(store.endpoint, 1 << 20, Date.now() + 5000, 'the store');
      const ws = inbox.socket;
      const send = ws.send.bind(ws);
      let busyMs = 0;
      ws.send = ((data: Buffer, ...rest: []) => {
        send(data, ...rest);
        if (busyMs > 0) return;
        const t0 = Date.now();
        while (Date.now() - t0 < PENDING_MS + 500);
        busyMs = Date.now() - t0;
      }) as typeof ws.send;
      await withDeadline(clientHandshake(inbox, { token: TOKEN, rank: 0, serverId: 'store', timeoutMs: 10_000, peer: 'the store' }), 15_000, 'handshake');
      expect(busyMs).toBeGreaterThan(PENDING_MS);
      ws.terminate();
    } finally {
      await store.close();
    }
  });

  it.each([0, 2, 3])('a rank 0 out of file descriptors (%i left) fails init at once with a typed error saying so', async (free) => {
    const port = await freePort();
    const env = { RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RINGREDUCE_TOKEN: TOKEN, RINGREDUCE_START_TIMEOUT: '30', FREE: String(free) };
    const proc = new Proc('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, join(root, 'test', 'fixtures', 'emfile-rank.mjs')], env, `rank 0 (${free} fds left)`);
    try {
      const ev = (await proc.waitFor(() => proc.events.find((e) => e.ev === 'error' || e.ev === 'ready'), 20_000, 'init ends')) as unknown as {
        ev: string;
        code: string;
        message: string;
        ms: number;
      };
      console.log(`[row 3] ${free} fds left: after ${ev.ms} ms: ${ev.code}: ${ev.message}`);
      expect(ev.ev).toBe('error');
      expect(ev.code).toBe('RING_ERR_RENDEZVOUS');
      expect(ev.message).toMatch(/out of file descriptors.*ulimit -n/);
      expect(ev.ms).toBeLessThan(10_000); // not the start timeout (30 s)
    } finally {
      proc.kill();
    }
  });
});

describe('row 11: a first message of 1 MB is not decoded', () => {
  it('50 connections whose first message is a 120,000-key map: closed at once, under 20 ms of the server\'s CPU each', async () => {
    const t = await target();
    try {
      const msg = frame(wideMap());
      // Warm up (the server's first connections compile code).
      for (let i = 0; i < 5; i++) {
        const u = await upgrade(t.store);
        u.socket.write(frame(encodeControl({ t: 'hello' })));
        await withDeadline(u.closed, 5000, 'warm-up connection closed');
      }
      const cpu0 = cpuMs(t.pid);
      for (let i = 0; i < 50; i++) {
        const u = await upgrade(i % 2 ? t.rank : t.store);
        expect(u.ok, `connection ${i} upgraded`).toBe(true);
        u.socket.write(msg);
        await withDeadline(u.closed, 5000, `connection ${i} closed`);
        expect(closeCodeIn(u.after), `connection ${i}: the close frame in ${Buffer.concat(u.after).length} bytes`).toBe(1009);
      }
      const perConnection = (cpuMs(t.pid) - cpu0) / 50;
      console.log(`[row 11] a 1 MB first message: ${perConnection.toFixed(1)} ms of the server's CPU per connection`);
      expect(perConnection).toBeLessThan(20);
    } finally {
      t.proc.kill();
    }
  });
});

describe('row 11: a client still writing when it is dropped', () => {
  it('gets the 1009 close frame: the server drains and ends the connection instead of resetting it', async () => {
    // Destroyed with the client's bytes unread, the server's socket answered with a TCP reset, and
    // a client with a write still pending lost the close frame with it (27 of 40 connections).
    const t = await target();
    try {
      const body = Buffer.alloc(32 << 20, 0x61);
      for (let i = 0; i < 20; i++) {
        const u = await upgrade(i % 2 ? t.rank : t.store);
        expect(u.ok, `connection ${i} upgraded`).toBe(true);
        u.socket.write(frameHeader(body.length));
        u.socket.write(body);
        await withDeadline(u.closed, 5000, `connection ${i} closed`);
        expect(closeCodeIn(u.after), `connection ${i}: the close frame in ${Buffer.concat(u.after).length} bytes`).toBe(1009);
      }
    } finally {
      t.proc.kill();
    }
  });
});

// A check that the gate's hold on ws internals is real: without it pending connections would get
// the server's own payload limit (see gate.ts).
describe('the ws internals the gate relies on', () => {
  it('ws has a Receiver with _maxPayload', async () => {
    const { server, endpoint } = await listen('127.0.0.1', 0, 1 << 20);
    try {
      const got = new Promise<number>((resolve) => server.on('connection', (ws: WebSocket) => resolve((ws as unknown as { _receiver: { _maxPayload: number } })._receiver._maxPayload)));
      const u = await upgrade(endpoint.port);
      expect(await got).toBe(PENDING_MAX_PAYLOAD);
      u.socket.destroy();
    } finally {
      await closeWsServer(server);
    }
  });
});
