#!/usr/bin/env node
// Two floors under `ringrun bench --op sendrecv`, for bench/compare.mjs --op sendrecv:
//   memcpy  TypedArray.prototype.set of BYTES in one process: busbw = BYTES / time
//   net     a plain `net` socket on 127.0.0.1 between two processes, both directions at once as
//           sendrecv does: each side writes BYTES and reads BYTES into a preallocated buffer;
//           an iteration's time is the slower side's
//   node bench/sendrecv-baselines.mjs ITERS WARMUP BYTES...
// -> one JSON row per baseline and size on stdout: {"baseline","bytes","timeUs"} (median over ITERS).
import { fork } from 'node:child_process';
import { createConnection, createServer } from 'node:net';

const [iters, warmup] = process.argv.slice(2, 4).map(Number);
const sizes = process.argv.slice(4).map(Number);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const row = (baseline, bytes, ms) => console.log(JSON.stringify({ baseline, bytes, timeUs: ms * 1000 }));

function memcpy(bytes) {
  const src = new Uint8Array(bytes).map((_, i) => i);
  const dst = new Uint8Array(bytes);
  const times = [];
  for (let it = -warmup; it < iters; it++) {
    const t0 = performance.now();
    dst.set(src);
    if (it >= 0) times.push(performance.now() - t0);
  }
  return median(times);
}

/** Reads the socket's stream: each call of the returned function fills its `into` and resolves. */
function reader(sock) {
  let into;
  let off = 0;
  let done = null;
  let early = [];
  const onData = (chunk) => {
    while (chunk.length > 0) {
      if (!done) return void early.push(chunk); // the peer's next round, before this side asked
      const n = Math.min(chunk.length, into.length - off);
      into.set(chunk.subarray(0, n), off);
      off += n;
      chunk = chunk.subarray(n);
      if (off === into.length) {
        off = 0;
        const d = done;
        done = null;
        d();
      }
    }
  };
  sock.on('data', onData);
  return (buf) =>
    new Promise((resolve) => {
      into = buf;
      done = resolve;
      const pending = early;
      early = [];
      for (const c of pending) onData(c);
    });
}

/** One side: per size, WARMUP + ITERS rounds of write BYTES / read BYTES at once; its times (ms). */
async function exchange(sock) {
  sock.setNoDelay(true);
  const out = {};
  const read = reader(sock);
  for (const bytes of sizes) {
    const buf = Buffer.alloc(bytes, 1);
    const into = new Uint8Array(bytes);
    const times = [];
    for (let it = -warmup; it < iters; it++) {
      const t0 = performance.now();
      await Promise.all([new Promise((resolve) => sock.write(buf, resolve)), read(into)]);
      if (it >= 0) times.push(performance.now() - t0);
    }
    out[bytes] = times;
  }
  return out;
}

if (process.env.SENDRECV_BASELINE_PORT) {
  // The second process: connect, exchange, hand its times to the first.
  const sock = createConnection({ host: '127.0.0.1', port: Number(process.env.SENDRECV_BASELINE_PORT) }, async () => {
    process.send(await exchange(sock), () => {
      sock.end();
      process.disconnect();
    });
  });
} else {
  for (const bytes of sizes) row('memcpy', bytes, memcpy(bytes));
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const child = fork(new URL(import.meta.url).pathname, process.argv.slice(2), { env: { ...process.env, SENDRECV_BASELINE_PORT: String(server.address().port) } });
  const theirs = new Promise((resolve) => child.once('message', resolve));
  const sock = await new Promise((resolve) => server.once('connection', resolve));
  const mine = await exchange(sock);
  const other = await theirs;
  for (const bytes of sizes) row('net', bytes, median(mine[bytes].map((t, i) => Math.max(t, other[bytes][i]))));
  sock.destroy();
  server.close();
}
