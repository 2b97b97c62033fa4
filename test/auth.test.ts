import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { get as httpGet } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { RingError } from '../src/errors.js';
import { clientHandshake } from '../src/transport/ws/auth.js';
import { Inbox } from '../src/transport/ws/inbox.js';
import { faultRank, freePort, killAll, killStarted, poll, Proc, ringrun } from './helpers/procs.js';
import { root } from './helpers/run.js';

/**
 * Issue 6, item 4: while a real job runs, strangers knock on the rendezvous store and on a rank's
 * ports — with a wrong job token, with a REPLAYED legitimate handshake (bytes a real rank wrote,
 * recorded by test/fixtures/record-writes.mjs and sent again on a new connection), with random
 * bytes (raw, and inside a WebSocket) and with a plain HTTP request. Each is refused, each refusal
 * is logged naming the stranger's address, and the job's results stay exact.
 */

// Behind each test's own finally: nothing a test started outlives it, even on a vitest timeout.
afterEach(killStarted);

const recorder = join(root, 'test', 'fixtures', 'record-writes.mjs');
const HOST = '127.0.0.1';
const STEP_MS = 5_000;

interface Outcome {
  /** The stranger's own port, as the server logs it. */
  localPort: number;
  what: string;
  /** From connecting to being refused (connection closed / 4xx answer). */
  ms: number;
  attack: string;
}

/** TCP: writes `bytes`, returns what came back until the server closed the connection. */
function raw(port: number, bytes: Buffer): Promise<{ localPort: number; reply: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect(port, HOST);
    const got: Buffer[] = [];
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`port ${port} kept a connection open ${STEP_MS} ms after ${bytes.length} junk/replayed bytes`));
    }, STEP_MS);
    let localPort = 0;
    s.on('connect', () => {
      localPort = s.localPort!;
      s.write(bytes);
    });
    s.on('data', (d) => got.push(d));
    s.on('error', () => {}); // a reset after the refusal is fine
    s.on('close', () => {
      clearTimeout(t);
      resolve({ localPort, reply: Buffer.concat(got) });
    });
  });
}

/** The WebSocket frames after the HTTP head of `bytes`: opcode, where the payload starts, its length. */
function* frames(bytes: Buffer): Generator<{ op: number; start: number; len: number }> {
  let i = bytes.indexOf('\r\n\r\n');
  if (i < 0) return;
  i += 4;
  while (i + 2 <= bytes.length) {
    const op = bytes[i] & 0x0f;
    const masked = (bytes[i + 1] & 0x80) !== 0;
    let len = bytes[i + 1] & 0x7f;
    i += 2;
    if (len === 126) {
      len = bytes.readUInt16BE(i);
      i += 2;
    } else if (len === 127) {
      len = Number(bytes.readBigUInt64BE(i));
      i += 8;
    }
    if (masked) i += 4;
    yield { op, start: i, len };
    i += len;
  }
}

/** The close code the server sent after its 101 response, if any. */
function closeCode(reply: Buffer): number | undefined {
  for (const f of frames(reply)) if (f.op === 0x8) return f.len >= 2 ? reply.readUInt16BE(f.start) : 1005;
  return undefined;
}

/** A recorded client stream cut after its handshake: the upgrade request and the first frame (auth). */
function handshakeOnly(recorded: Buffer): Buffer {
  const first = frames(recorded).next();
  if (first.done) throw new Error('the recording holds no WebSocket frame');
  return recorded.subarray(0, first.value.start + first.value.len);
}

async function dialWs(port: number): Promise<{ ws: WebSocket; inbox: Inbox; localPort: number; closed: Promise<number> }> {
  const ws = new WebSocket(`ws://${HOST}:${port}/`);
  const inbox = new Inbox(ws);
  const closed = new Promise<number>((res) => ws.once('close', (code) => res(code)));
  ws.on('error', () => {});
  let localPort = 0;
  ws.once('upgrade', (res) => (localPort = res.socket.localPort!));
  await new Promise((res, rej) => (ws.once('open', res), ws.once('error', rej)));
  return { ws, inbox, localPort, closed };
}

const within = <T>(p: Promise<T>, what: string) =>
  Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`${what}: nothing within ${STEP_MS} ms`)), STEP_MS))]);

/** Every way in without the token, against one server; returns who knocked and how. */
async function attack(port: number, serverId: string, replay: Buffer): Promise<Outcome[]> {
  const out: Outcome[] = [];

  // 1. The right protocol with the wrong job token.
  let t0 = Date.now();
  const a = await dialWs(port);
  const err = await clientHandshake(a.inbox, { token: 'not-the-job-token', rank: 1, serverId, timeoutMs: STEP_MS, peer: serverId }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RingError);
  expect((err as RingError).code).toBe('RING_ERR_AUTH');
  expect(await within(a.closed, 'close after a wrong token')).toBe(1008);
  out.push({ attack: 'wrong token', localPort: a.localPort, what: 'failed authentication (wrong job token)', ms: Date.now() - t0 });

  // 2. A legitimate handshake, replayed byte for byte on a new connection: the server's fresh nonce makes the old MAC wrong.
  expect(replay.toString('latin1')).toMatch(/^GET \/ HTTP\/1\.1\r\n/);
  t0 = Date.now();
  const r = await raw(port, replay);
  expect(r.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 101 Switching Protocols/);
  expect(closeCode(r.reply)).toBe(1008);
  out.push({ attack: 'replayed handshake', localPort: r.localPort, what: 'failed authentication (wrong job token)', ms: Date.now() - t0 });

  // 3. Random bytes inside a WebSocket instead of the auth message.
  t0 = Date.now();
  const b = await dialWs(port);
  await b.inbox.next(STEP_MS); // the challenge
  b.ws.send(randomBytes(200));
  expect(await within(b.closed, 'close after junk in a WebSocket')).toBe(1008);
  out.push({ attack: 'junk in a WebSocket', localPort: b.localPort, what: '', ms: Date.now() - t0 });

  // 4. Random bytes that are not even HTTP.
  const junk = Buffer.concat([Buffer.from([0]), randomBytes(255)]);
  t0 = Date.now();
  const j = await raw(port, junk);
  expect(j.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
  out.push({ attack: 'random bytes', localPort: j.localPort, what: 'not an HTTP request', ms: Date.now() - t0 });

  // 5. A plain HTTP request.
  t0 = Date.now();
  const h = await within(
    new Promise<{ status: number; localPort: number }>((resolve, reject) => {
      const req = httpGet({ host: HOST, port, path: '/', agent: false }, (res) => {
        res.resume();
        resolve({ status: res.statusCode!, localPort: req.socket!.localPort! });
      });
      req.on('error', reject);
    }),
    'plain HTTP',
  );
  expect(h.status).toBe(426);
  out.push({ attack: 'plain HTTP GET', localPort: h.localPort, what: 'a plain HTTP GET request, not a WebSocket upgrade', ms: Date.now() - t0 });
  return out;
}

/** The TCP ports `pid` listens on (from ss). */
function listeningPorts(pid: number): number[] {
  const out = execFileSync('ss', ['-Hltnp'], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => Number(/:(\d+)\s/.exec(l.split(/\s+/)[3] + ' ')![1]));
}

describe('strangers without the job token, during a running job', () => {
  it.each(['ringrun', 'MASTER_ADDR/MASTER_PORT'] as const)(
    'via %s: store and rank ports refuse a wrong token, a replayed handshake, junk and plain HTTP, and log each; results stay exact',
    async (via) => {
      const n = 3;
      const procs: Proc[] = [];
      const dir = mkdtempSync(join(tmpdir(), 'rr-auth-'));
      try {
        const rec = join(dir, 'rec');
        mkdirSync(rec);
        const stop = join(dir, 'stop');
        const env = { ELEMS: String(64 << 10), PAUSE_MS: '20', STOP_FILE: stop, RECORD_DIR: rec, RECORD_RANK: '1', EXIT_DELAY_MS: '0' };
        const nodeArgs = ['--import', recorder, faultRank];
        let storePort: number | undefined;
        if (via === 'ringrun') {
          procs.push(new Proc(process.execPath, [ringrun, '-np', String(n), '--grace', '2', 'node', ...nodeArgs], env, 'ringrun'));
        } else {
          storePort = await freePort();
          for (let r = 0; r < n; r++) {
            const e = { ...env, RANK: String(r), WORLD_SIZE: String(n), MASTER_ADDR: HOST, MASTER_PORT: String(storePort), RINGREDUCE_TOKEN: 'auth-test-token' };
            procs.push(new Proc(process.execPath, nodeArgs, e, `rank ${r}`));
          }
        }
        const all = (ev: 'ready' | 'done') => procs.flatMap((p) => p.of(ev));
        const output = () => procs.map((p) => p.stdout + p.stderr).join('\n');
        await poll(() => all('done').length >= 3 * n, 40_000, () => `the job running:\n${output()}`);
        const rank0 = all('ready').find((e) => e.rank === 0)!.pid!;
        storePort ??= Number(all('ready')[0].store!.split(':')[1]);

        // Rank 1 connected to the store and to its left neighbour, rank 0: replay those.
        const files = readdirSync(rec);
        const recorded = (port: number) => handshakeOnly(readFileSync(join(rec, files.find((f) => f.startsWith(`${port}-`))!)));
        const rankPorts = listeningPorts(rank0).filter((p) => p !== storePort);
        const ringPort = rankPorts.find((p) => files.some((f) => f.startsWith(`${p}-`)));
        expect(ringPort, `rank 1 recorded a connection to one of rank 0's ports ${rankPorts} (files: ${files})`).toBeDefined();
        expect(files.some((f) => f.startsWith(`${storePort}-`)), `rank 1 recorded its store connection (files: ${files})`).toBe(true);
        const doneBefore = all('done').length;

        const onStore = await attack(storePort, 'store', recorded(storePort));
        const onRank = await attack(ringPort!, 'rank:0', recorded(ringPort!));
        expect(all('done').length, 'the job kept running during the attacks').toBeGreaterThan(doneBefore);

        writeFileSync(stop, '');
        for (const p of procs) {
          const exit = await p.waitFor(() => p.exit, 30_000, `${p.label} exits`);
          expect(exit.code, `${p.label}:\n${p.stderr}`).toBe(0);
        }
        expect(procs.flatMap((p) => p.of('finished')).map((e) => e.rank).sort()).toEqual([0, 1, 2]);
        expect(procs.flatMap((p) => p.of('wrong'))).toEqual([]);
        expect(procs.flatMap((p) => p.of('error'))).toEqual([]);

        // Every refusal is logged naming the stranger's address. The store's log is ringrun's own
        // stderr (it hosts the store) or rank 0's; rank 0's comes through ringrun tagged [1,0].
        const log = procs[0].stderr;
        const check = (who: RegExp, outcomes: Outcome[]) => {
          for (const o of outcomes) {
            const line = log.split('\n').find((l) => who.test(l) && l.includes(`${HOST}:${o.localPort}`));
            expect(line, `no log line for the stranger at port ${o.localPort} (${o.what}) in:\n${log}`).toBeDefined();
            expect(line).toContain(o.what);
          }
        };
        check(/rendezvous store: refused/, onStore);
        check(/rank 0: refused a connection/, onRank);
        for (const [where, outcomes] of [['store', onStore], ['rank 0', onRank]] as const) {
          console.log(`[auth] ${via}, ${where}: ${outcomes.map((o) => `${o.attack} refused in ${o.ms} ms`).join('; ')}`);
        }
        console.log(`[auth] ${via}: refusals logged:\n${log.split('\n').filter((l) => /refused/.test(l)).join('\n')}`);
      } finally {
        killAll(procs);
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
