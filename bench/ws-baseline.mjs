// The wall under the ring: two Node processes sending each other BYTES over one ws connection
// each way at once (1 MiB messages, zero mask), as an N=2 ring must. Prints GB/s per direction.
//   node bench/ws-baseline.mjs [bytes=64M] [iters=10]
import { fork } from 'node:child_process';
import { WebSocket, WebSocketServer } from 'ws';

const BYTES = (process.argv[2] ?? '64M').replace(/M$/, '') * (process.argv[2]?.endsWith('M') || !process.argv[2] ? 1 << 20 : 1);
const ITERS = Number(process.argv[3] ?? 10);
const MSG = 1 << 20;
const zero = (m) => m.fill(0);

async function exchange(out, inc, buf) {
  // Send BYTES and receive BYTES concurrently, at most 4 messages in flight.
  let sent = 0, inflight = 0, got = 0;
  return new Promise((resolve) => {
    const pump = () => {
      while (inflight < 4 && sent < BYTES) {
        inflight++;
        const n = Math.min(MSG, BYTES - sent);
        out.send(buf.subarray(sent, sent + n), () => { inflight--; pump(); maybe(); });
        sent += n;
      }
    };
    const maybe = () => { if (got >= BYTES && sent >= BYTES && inflight === 0) { inc.off('message', onMsg); resolve(); } };
    const onMsg = (d) => { got += d.length; maybe(); };
    inc.on('message', onMsg);
    pump();
  });
}

if (process.argv[4] === 'child') {
  const port = Number(process.argv[5]);
  const srv = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false, maxPayload: 2 * MSG });
  srv.on('listening', () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, generateMask: zero, maxPayload: 2 * MSG });
    ws.on('open', () => process.send({ port: srv.address().port }));
    srv.on('connection', async (inc) => {
      const buf = new Uint8Array(BYTES);
      for (let i = 0; i <= ITERS + 2; i++) await exchange(ws, inc, buf);
      process.exit(0);
    });
  });
} else {
  const srv = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false, maxPayload: 2 * MSG });
  srv.on('listening', () => {
    const child = fork(new URL(import.meta.url).pathname, [process.argv[2] ?? '64M', String(ITERS), 'child', String(srv.address().port)]);
    srv.on('connection', (inc) => {
      child.on('message', async ({ port }) => {
        const out = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, generateMask: zero, maxPayload: 2 * MSG });
        await new Promise((r) => out.on('open', r));
        const buf = new Uint8Array(BYTES);
        const times = [];
        for (let i = -2; i <= ITERS; i++) {
          const t0 = performance.now();
          await exchange(out, inc, buf);
          if (i > 0) times.push(performance.now() - t0);
        }
        times.sort((a, b) => a - b);
        const med = times[Math.floor(times.length / 2)] / 1000;
        console.log(`ws both ways at once, ${BYTES} B each way: ${(BYTES / med / 1e9).toFixed(3)} GB/s per direction (median of ${times.length})`);
        process.exit(0);
      });
    });
  });
}
