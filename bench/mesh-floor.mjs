#!/usr/bin/env node
// The floor of a small all-reduce in Node: N processes on 127.0.0.1, a full mesh of net sockets
// (noDelay), one round per operation (write 4 bytes to every peer, wait for every peer's 4 bytes).
// No agreement, no checks, no framing: what Node's event loop and the kernel's loopback cost, next
// to bench/mesh_floor.py (blocking sockets, no event loop) and to Gloo's and ringreduce's 4-byte
// all-reduce (docs/PERFORMANCE.md).
//   node bench/mesh-floor.mjs N [ITERS]  -> us per operation (slowest rank) and CPU per rank
import { fork } from 'node:child_process';
import net from 'node:net';

const n = Number(process.argv[2]);
const iters = Number(process.argv[3] ?? 3000);
if (!Number.isSafeInteger(n) || n < 2 || !Number.isSafeInteger(iters) || iters < 1) {
  console.error('usage: node bench/mesh-floor.mjs N [ITERS]   (N >= 2 processes, ITERS timed operations, default 3000)');
  process.exit(2);
}

if (process.env.MESH_FLOOR_RANK === undefined) {
  const base = 40000 + (process.pid % 20000);
  const kids = Array.from({ length: n }, (_, r) => fork(process.argv[1], process.argv.slice(2), { env: { ...process.env, MESH_FLOOR_RANK: String(r), MESH_FLOOR_BASE: String(base) } }));
  const res = await Promise.all(kids.map((k) => new Promise((resolve) => k.on('message', resolve))));
  const cpu = res.map((x) => x.cpu).reduce((a, b) => a + b, 0) / n;
  console.log(`mesh floor (Node net), 4-byte all-reduce, N=${n}: ${Math.max(...res.map((x) => x.us)).toFixed(1)} us/op, ${cpu.toFixed(1)} us CPU per rank per op`);
  for (const k of kids) k.kill();
} else {
  const r = Number(process.env.MESH_FLOOR_RANK);
  const base = Number(process.env.MESH_FLOOR_BASE);
  const peers = new Map();
  let got = 0;
  let wake;
  const listen = (s) => {
    let pending = 0;
    s.on('data', (d) => {
      pending += d.length;
      while (pending >= 4) {
        pending -= 4;
        got++;
      }
      if (got >= n - 1 && wake) {
        const w = wake;
        wake = undefined;
        w();
      }
    });
  };
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    s.once('data', (d) => {
      peers.set(d.readInt32LE(0), s);
      listen(s);
      if (d.length > 4) s.emit('data', d.subarray(4));
    });
  });
  await new Promise((resolve) => server.listen(base + r, '127.0.0.1', resolve));
  await new Promise((resolve) => setTimeout(resolve, 500)); // every rank listening
  for (let p = r + 1; p < n; p++) {
    const s = net.connect(base + p, '127.0.0.1');
    s.setNoDelay(true);
    await new Promise((resolve) => s.on('connect', resolve));
    const hello = Buffer.alloc(4);
    hello.writeInt32LE(r);
    s.write(hello);
    peers.set(p, s);
    listen(s);
  }
  while (peers.size < n - 1) await new Promise((resolve) => setTimeout(resolve, 10));
  const x = Buffer.alloc(4);
  x.writeFloatLE(1);
  // A peer's next operation may arrive before this one ends: arrivals are counted, not reset.
  const op = async () => {
    for (const s of peers.values()) s.write(x);
    if (got < n - 1) await new Promise((resolve) => (wake = resolve));
    got -= n - 1;
  };
  for (let i = 0; i < 500; i++) await op();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) await op();
  const c = process.cpuUsage(c0);
  process.send({ us: ((performance.now() - t0) * 1000) / iters, cpu: (c.user + c.system) / iters });
}
