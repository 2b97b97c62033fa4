#!/usr/bin/env node
// Attacks from issue 14 on live jobs over 127.0.0.1, with the figures the issue reports: what a
// stranger without the job token (rows 1, 2, 3, 11a) and a holder of the token (rows 11b, 11c)
// costs a job. Uses the built library (npm run build first). Prints a few lines per row.
//
//   node bench/hostile-net.mjs [row ...]     rows: 1a 1b 2 3 3limit 11a 11b 11c (default: all)
//
//   1a      an idle TCP connection (no bytes) to ringrun's store and one to rank 0's port, then
//           the ranks finish: how long ringrun still runs after the last rank said it was done
//   1b      rank 0 hosts the store (MASTER_ADDR/PORT), rank 1 never comes, start timeout 3 s, an
//           idle TCP connection to the store: when rank 0 gives up
//   2       2,000 WebSocket connections without the token (1,000 to ringrun's store, 1,000 to rank 0),
//           each sending a frame header for 1 MiB and 1 MiB - 1 of it: RSS of ringrun and rank 0
//   3       2,000 idle TCP connections (1,000 to the store and 1,000 to the port of rank 0, which
//           hosts the store), then the job runs an all-reduce: open fds of rank 0, the job's outcome
//   3limit  the same with rank 0 under `ulimit -n 1024`, the connections made before ranks 1-2 start
//   11a     100 connections without the token whose first message is a 1 MB msgpack map of 120k
//           keys: rank 0's CPU time per connection
//   11b     a holder of the token, as rank 1, sends 200 such maps as heartbeats: rank 0's CPU time,
//           RSS, and what rank 0 reports
//   11c     the same with maps of 30,000 keys (240 KB: within the size limit for control messages)
//
// Internal: `--rank` runs one rank (formRing, no comm thread, so that it has exactly one port):
// prints {ev:'ready', rank, address, pid, store}, or {ev:'error', code, message} and exits 1 if
// init fails; waits on a barrier named 'wait' (printing how it ends) when WAIT_BARRIER is set; once
// the file EXIT_FILE exists (or EXIT_AT_ONCE ms have passed) runs an all-reduce (checked), shuts
// down, prints {ev:'done', rank, ok, at} and exits 0. test/hostile-stranger.test.ts runs it too.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect as tcpConnect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist');
const imp = (p) => import(join(dist, p));
const ringrunBin = join(here, '..', 'bin', 'ringrun.js');
const self = fileURLToPath(import.meta.url);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

async function rankMain() {
  const { formRing } = await imp('rendezvous/ring.js');
  const { resolveOptions } = await imp('options.js');
  let g;
  try {
    g = await formRing(resolveOptions({}));
  } catch (e) {
    say({ ev: 'error', code: e.code, message: e.message, at: Date.now() });
    process.exit(1);
  }
  say({ ev: 'ready', rank: g.rank, address: g.address, pid: process.pid, store: process.env.RINGRUN_STORE });
  if (process.env.WAIT_BARRIER) {
    g.barrier({ name: 'wait' }).then(
      () => say({ ev: 'barrier', ok: true }),
      (e) => say({ ev: 'barrier', code: e.code, message: e.message.slice(0, 300) }),
    );
  }
  if (process.env.EXIT_AT_ONCE === undefined) {
    while (!existsSync(process.env.EXIT_FILE)) await sleep(50);
  } else await sleep(Number(process.env.EXIT_AT_ONCE));
  const x = new Float32Array(1000).fill(g.rank + 1);
  const t0 = Date.now();
  let ok = false;
  try {
    const y = await g.allreduce(x);
    ok = y.every((v) => v === (g.size * (g.size + 1)) / 2);
    say({ ev: 'allreduce', ok, ms: Date.now() - t0 });
  } catch (e) {
    say({ ev: 'allreduce', code: e.code, message: e.message.slice(0, 300), ms: Date.now() - t0 });
  }
  await g.shutdown();
  say({ ev: 'done', rank: g.rank, ok, at: Date.now() });
  process.exit(0);
}

// ---- process plumbing ----------------------------------------------------------------------------

const scratch = process.argv[2] === '--rank' ? '' : mkdtempSync(join(tmpdir(), 'rr-hostile-'));
/** Ranks finish once this exists (see rankMain); every row starts without it. */
const exitFile = join(scratch, 'exit');

class Child {
  constructor(cmd, args, env, label) {
    this.label = label;
    this.events = [];
    this.out = '';
    this.err = '';
    this.p = spawn(cmd, args, { env: { ...process.env, EXIT_FILE: exitFile, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.waiters = new Set();
    let partial = '';
    this.p.stdout.on('data', (d) => {
      this.out += d;
      partial += d;
      let i;
      while ((i = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, i);
        partial = partial.slice(i + 1);
        const m = /^(?:\[1,(\d+)\]<stdout>:)?(\{.*\})\s*$/.exec(line);
        if (m) this.events.push({ ...JSON.parse(m[2]), tag: m[1] === undefined ? undefined : Number(m[1]), seenAt: Date.now() });
      }
      this.poke();
    });
    this.p.stderr.on('data', (d) => (this.err += d));
    this.exited = new Promise((resolve) => this.p.on('exit', (code, signal) => resolve((this.exit = { code, signal, at: Date.now() }))));
    this.exited.then(() => this.poke());
  }
  poke() {
    for (const w of this.waiters) w();
  }
  waitFor(pred, ms, what) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const v = pred();
        if (v) {
          clearTimeout(t);
          this.waiters.delete(check);
          resolve(v);
        }
      };
      const t = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`${this.label}: ${what} not within ${ms} ms\n${this.out}\n${this.err.slice(-2000)}`));
      }, ms);
      this.waiters.add(check);
      check();
    });
  }
  kill() {
    try {
      process.kill(-this.p.pid, 'SIGKILL');
    } catch {}
  }
}

const ringrun = (np, env = {}) => new Child(process.execPath, [ringrunBin, '-np', String(np), process.execPath, self, '--rank'], env, 'ringrun');
const rankProc = (rank, size, port, env = {}, wrap) => {
  const e = { RANK: String(rank), WORLD_SIZE: String(size), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RINGREDUCE_TOKEN: 'bench-token', ...env };
  return wrap
    ? new Child('sh', ['-c', `${wrap}; exec "$0" "$@"`, process.execPath, self, '--rank'], e, `rank ${rank}`)
    : new Child(process.execPath, [self, '--rank'], e, `rank ${rank}`);
};

async function freePort() {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const hostPort = (a) => {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(a.slice(i + 1)) };
};

function procStatus(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { rssMB: Math.round(kb('VmRSS') / 1024), hwmMB: Math.round(kb('VmHWM') / 1024) };
}
const CLK_TCK = 100;
function cpuMs(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}
const fds = (pid) => readdirSync(`/proc/${pid}/fd`).length;

/** An idle TCP connection: connects, sends nothing. */
function idle(port) {
  return new Promise((resolve) => {
    const s = tcpConnect(port, '127.0.0.1');
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('close', () => resolve(s));
  });
}

/** A WebSocket upgrade by hand; resolves with the socket once the server answered 101 (or closed). */
function upgrade(port) {
  return new Promise((resolve) => {
    const s = tcpConnect(port, '127.0.0.1');
    s.on('error', () => {});
    s.once('connect', () =>
      s.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`),
    );
    let head = '';
    const onData = (d) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        s.off('data', onData);
        resolve({ s, ok: head.startsWith('HTTP/1.1 101') });
      }
    };
    s.on('data', onData);
    s.once('close', () => resolve({ s, ok: false }));
  });
}

/** A masked client frame header (binary, FIN) for `n` payload bytes, mask all zero. */
function frameHeader(n) {
  const b = Buffer.alloc(14);
  b[0] = 0x82;
  b[1] = 0x80 | 127;
  b.writeBigUInt64BE(BigInt(n), 2);
  return b; // mask bytes 10..13 are zero
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true });
function bigMap(keys = 120_000) {
  const o = { t: 'beat', rank: 1, everyMs: 1000 };
  for (let i = 0; i < keys; i++) o[`k${i}`] = 1;
  return Buffer.concat([Buffer.from([0]), packr.pack(o)]);
}

// ---- the rows --------------------------------------------------------------------------------

const rows = {
  async '1a'() {
    const out = [];
    for (const target of ['store', 'rank 0']) {
      const job = ringrun(2, { EXIT_AT_ONCE: '1500' });
      let conn;
      try {
        await job.waitFor(() => job.events.filter((e) => e.ev === 'ready').length === 2, 30_000, 'ranks ready');
        const r0 = job.events.find((e) => e.ev === 'ready' && e.rank === 0);
        conn = await idle(hostPort(target === 'store' ? r0.store : r0.address).port);
        await job.waitFor(() => job.events.filter((e) => e.ev === 'allreduce').length === 2, 30_000, 'ranks done');
        const worked = Math.max(...job.events.filter((e) => e.ev === 'allreduce').map((e) => e.seenAt));
        const exit = await Promise.race([job.exited, sleep(60_000).then(() => undefined)]);
        const done = job.events.filter((e) => e.ev === 'done').map((e) => `rank ${e.tag} ${e.seenAt - worked} ms`);
        out.push(
          `idle connection to ${target}: after the last all-reduce, shut down: ${done.join(', ') || 'none'}; ` +
            (exit ? `ringrun exited ${exit.at - worked} ms after it (code ${exit.code})` : 'ringrun still running 60 s after it'),
        );
      } finally {
        conn?.destroy();
        job.kill();
      }
    }
    return out.join('\n');
  },

  async '1b'() {
    const port = await freePort();
    const t0 = Date.now();
    const r0 = rankProc(0, 2, port, { RINGREDUCE_START_TIMEOUT: '3' });
    let conn;
    try {
      for (let i = 0; i < 200 && !conn; i++) {
        const s = await idle(port);
        if (!s.destroyed) conn = s;
        else await sleep(20);
      }
      const exit = await Promise.race([r0.exited, sleep(60_000).then(() => undefined)]);
      const err = r0.events.find((e) => e.ev === 'error');
      return exit
        ? `rank 0 (start timeout 3 s) exited after ${exit.at - t0} ms: ${err?.code} ${err?.message?.slice(0, 120)}`
        : 'rank 0 (start timeout 3 s) still running after 60 s';
    } finally {
      conn?.destroy();
      r0.kill();
    }
  },

  async '2'() {
    const job = ringrun(2);
    const conns = [];
    try {
      await job.waitFor(() => job.events.filter((e) => e.ev === 'ready').length === 2, 30_000, 'ranks ready');
      const r0 = job.events.find((e) => e.ev === 'ready' && e.rank === 0);
      const ports = [hostPort(r0.store).port, hostPort(r0.address).port];
      const pids = { ringrun: job.p.pid, 'rank 0': r0.pid };
      const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procStatus(pid)]));
      const MiB = 1 << 20;
      const body = Buffer.alloc(MiB - 1, 0x61);
      let upgraded = 0;
      for (let i = 0; i < 2000; i++) {
        const { s, ok } = await upgrade(ports[i % 2]);
        conns.push(s);
        if (!ok) continue;
        upgraded++;
        s.write(frameHeader(MiB));
        s.write(body);
      }
      await sleep(3000);
      const during = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procStatus(pid)]));
      const open = conns.filter((s) => !s.destroyed).length;
      conns.forEach((s) => s.destroy());
      await sleep(3000);
      const after = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procStatus(pid)]));
      writeFileSync(exitFile, '');
      await job.waitFor(() => job.events.filter((e) => e.ev === 'allreduce').length === 2, 20_000, 'allreduce');
      const ok = job.events.filter((e) => e.ev === 'allreduce').every((e) => e.ok);
      return Object.keys(pids)
        .map((k) => `${k}: RSS ${before[k].rssMB} -> ${during[k].rssMB} MB 3 s into the attack (peak ${during[k].hwmMB}), ${after[k].rssMB} MB 3 s after it`)
        .concat(`${upgraded} of 2000 upgraded, ${open} still open after 3 s; the job's all-reduce afterwards: ${ok ? 'exact' : 'FAILED'}`)
        .join('\n');
    } finally {
      conns.forEach((s) => s.destroy());
      job.kill();
    }
  },

  async '3'() {
    return fdRow(undefined);
  },
  async '3limit'() {
    return fdRow('ulimit -n 1024');
  },

  async '11a'() {
    const port = await freePort();
    const r0 = rankProc(0, 2, port, { RINGREDUCE_START_TIMEOUT: '120' });
    try {
      await sleep(300);
      for (let i = 0; i < 100 && !(await upgrade(port)).ok; i++) await sleep(50);
      const msg = bigMap();
      const frame = Buffer.concat([frameHeader(msg.length), msg]);
      await sleep(500);
      const pid = r0.p.pid;
      const cpu0 = cpuMs(pid);
      const rss0 = procStatus(pid);
      const t0 = Date.now();
      for (let i = 0; i < 100; i++) {
        const { s, ok } = await upgrade(port);
        if (ok) s.write(frame);
        await new Promise((r) => (s.destroyed ? r() : s.once('close', r)));
      }
      const wall = Date.now() - t0;
      await sleep(300);
      const cpu = cpuMs(pid) - cpu0;
      return `rank 0 (hosting the store): ${(cpu / 100).toFixed(1)} ms CPU per connection (${cpu} ms for 100, ${wall} ms wall), RSS ${rss0.rssMB} -> ${procStatus(pid).rssMB} MB`;
    } finally {
      r0.kill();
    }
  },

  async '11b'() {
    return heartbeats(120_000);
  },
  async '11c'() {
    return heartbeats(30_000);
  },
};

/** Rows 11b/c: 200 heartbeats from a token holder, each a map of `keys` keys. */
async function heartbeats(keys) {
  const port = await freePort();
  const r0 = rankProc(0, 2, port, { RINGREDUCE_START_TIMEOUT: '60', WAIT_BARRIER: '1' });
  const imp = await impostor(port, 'bench-token');
  try {
    await r0.waitFor(() => r0.events.find((e) => e.ev === 'ready'), 30_000, 'rank 0 ready');
    await sleep(500);
    const pid = r0.p.pid;
    const cpu0 = cpuMs(pid);
    const rss0 = procStatus(pid);
    const msg = bigMap(keys);
    let sent = 0;
    for (let i = 0; i < 200 && imp.toRank0Right.readyState === 1; i++) {
      await new Promise((r) => imp.toRank0Right.send(msg, r));
      sent++;
    }
    await sleep(1000);
    const cpu = cpuMs(pid) - cpu0;
    const b = r0.events.find((e) => e.ev === 'barrier');
    return (
      `rank 0: ${sent} heartbeats of ${(msg.length / 1e6).toFixed(2)} MB sent before it closed the link; ${cpu} ms CPU, RSS ${rss0.rssMB} -> ${procStatus(pid).rssMB} MB (peak ${procStatus(pid).hwmMB}); ` +
      `rank 0's pending barrier: ${b ? (b.ok ? 'completed' : `${b.code}: ${b.message}`) : 'still pending'}`
    );
  } finally {
    imp.close();
    r0.kill();
  }
}

async function fdRow(wrap) {
  const port = await freePort();
  const t0 = Date.now();
  // With the limit, the ranks run their all-reduce as soon as the ring is formed.
  const env = wrap ? { RINGREDUCE_START_TIMEOUT: '10', EXIT_AT_ONCE: '0' } : {};
  const ranks = [rankProc(0, 3, port, env, wrap)];
  const conns = [];
  const lines = [];
  try {
    if (wrap) {
      // Rank 0 alone: it hosts the store; the connections go there before anyone else comes.
      for (let i = 0; i < 200 && !(await upgrade(port)).ok; i++) await sleep(50);
      const pid = ranks[0].p.pid; // sh -c '...; exec node' is that very process
      const base = fds(pid);
      for (let i = 0; i < 2000; i++) conns.push(await idle(port));
      await sleep(500);
      lines.push(`rank 0 (ulimit -n 1024): fds ${base} -> ${fds(pid)} after 2,000 idle connections to its store; ${conns.filter((s) => !s.destroyed).length} still open`);
      ranks.push(rankProc(1, 3, port, env), rankProc(2, 3, port, env));
      const ends = await Promise.all(ranks.map((r) => Promise.race([r.exited, sleep(40_000).then(() => undefined)])));
      ranks.forEach((r, i) => {
        const e = r.events.find((x) => x.ev === 'error' || x.ev === 'allreduce');
        lines.push(`rank ${i}: ${ends[i] ? `exited ${ends[i].code} after ${ends[i].at - t0} ms` : 'still running after 40 s'}: ${e ? `${e.code ?? (e.ok ? 'allreduce exact' : '')} ${(e.message ?? '').slice(0, 200)}` : 'said nothing'}`);
      });
      return lines.join('\n');
    }
    ranks.push(rankProc(1, 3, port), rankProc(2, 3, port));
    await Promise.all(ranks.map((r) => r.waitFor(() => r.events.find((e) => e.ev === 'ready'), 30_000, 'ready')));
    const r0 = ranks[0].events.find((e) => e.ev === 'ready');
    const base = fds(r0.pid);
    for (let i = 0; i < 2000; i++) conns.push(await idle(i % 2 ? hostPort(r0.address).port : port));
    await sleep(500);
    lines.push(`rank 0: fds ${base} -> ${fds(r0.pid)} with 2,000 idle connections (1,000 to its store, 1,000 to its port); ${conns.filter((s) => !s.destroyed).length} still open after 0.5 s`);
    await sleep(4000);
    lines.push(`  4.5 s later: fds ${fds(r0.pid)}; ${conns.filter((s) => !s.destroyed).length} still open`);
    writeFileSync(exitFile, '');
    await Promise.all(ranks.map((r) => r.waitFor(() => r.events.find((e) => e.ev === 'allreduce'), 20_000, 'allreduce')));
    lines.push(`  the job's all-reduce afterwards: ${ranks.every((r) => r.events.find((e) => e.ev === 'allreduce').ok) ? 'exact' : 'FAILED'}`);
    return lines.join('\n');
  } finally {
    conns.forEach((s) => s.destroy());
    ranks.forEach((r) => r.kill());
  }
}

/** Rank 1 of a 2-rank job, played by a holder of the token (as test/hostile-peer.test.ts's impostor). */
async function impostor(storePort, token) {
  const { StoreClient } = await imp('rendezvous/store.js');
  const { connect, listen } = await imp('transport/ws/socket.js');
  const { clientHandshake, serverHandshake } = await imp('transport/ws/auth.js');
  const { Inbox } = await imp('transport/ws/inbox.js');
  const { encodeControl, decodeMessage } = await imp('transport/wire.js');
  const { noOffer, encodeReply, KIND_SHM_OFFER } = await imp('transport/shm/region.js');
  const { PROTOCOL } = await imp('rendezvous/records.js');
  const { machineKey } = await imp('rendezvous/address.js');
  const deadline = Date.now() + 30_000;
  const store = { host: '127.0.0.1', port: storePort };
  const sc = await StoreClient.connect(store, token, 1, deadline);
  const { server, endpoint } = await listen('127.0.0.1', 0, 1 << 21);
  const fromRank0 = new Promise((resolve, reject) =>
    server.on('connection', (ws) => {
      const inbox = new Inbox(ws);
      serverHandshake(inbox, { token, serverId: 'rank:1', challenge: { rank: 1, role: 'rank' }, admit: () => undefined, timeoutMs: 5000, peer: 'rank 0' }).then(
        () => resolve(inbox),
        reject,
      );
    }),
  );
  await sc.set('ring/1', { host: '127.0.0.1', port: endpoint.port, size: 2, chunkBytes: 1 << 20, tls: false, protocol: PROTOCOL, machine: machineKey(), pid: process.pid, hostname: 'impostor' });
  const table = await sc.get(['ring/0', 'ring/1'], 30_000);
  const right = await connect(table[0], 1 << 21, deadline, 'rank 0');
  await clientHandshake(right, { token, rank: 1, serverId: 'rank:0', timeoutMs: 5000, peer: 'rank 0' });
  const left = await fromRank0;
  left.socket.send(noOffer());
  right.drain((data) => {
    if (data[0] === KIND_SHM_OFFER) right.socket.send(encodeReply(false, 'impostor'));
    else decodeMessage(data, 'rank 0');
  });
  left.drain(() => {});
  left.socket.send(encodeControl({ t: 'desc', seq: 0, origin: 1, d: { kind: 'barrier', op: '', dtype: 0, count: 0, name: 'ringreduce:ring', root: -1, compression: 'none' } }));
  sc.close();
  return {
    toRank0Right: right.socket,
    close() {
      right.socket.terminate();
      left.socket.terminate();
      server.close();
    },
  };
}

async function main(args) {
  const which = args.length > 0 ? args : ['1a', '1b', '2', '3', '3limit', '11a', '11b', '11c'];
  for (const r of which) {
    if (!rows[r]) throw new Error(`unknown row '${r}' (rows: ${Object.keys(rows).join(' ')})`);
    const t0 = Date.now();
    let out;
    rmSync(exitFile, { force: true });
    try {
      out = await rows[r]();
    } catch (e) {
      out = `FAILED: ${e.stack ?? e}`;
    }
    console.log(`row ${r} (${((Date.now() - t0) / 1000).toFixed(1)} s):\n  ${out.split('\n').join('\n  ')}`);
  }
  rmSync(scratch, { recursive: true, force: true });
  process.exit(0);
}

if (process.argv[2] === '--rank') await rankMain();
else await main(process.argv.slice(2));
