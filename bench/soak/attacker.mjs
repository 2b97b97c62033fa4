// The soak's attacker (bench/soak.mjs --attack): started by rank 0 before init, it runs until
// SIGTERM against the job's store and every rank's port, as two people at once:
//   a stranger (no token): idle connections held a few seconds, random bytes, an upgrade without
//     the token that then sends a 1 MiB frame, a frame header announcing 1 GiB followed by 64 KiB;
//   a token holder: it reads the ranks' addresses from the store like a rank, then completes the
//     handshake as a rank that may not connect there (refused after the MAC verifies), and sends
//     a 1 MiB message of junk instead of the handshake's reply.
// Every action is bounded in time; at most MAX_OPEN connections are open at once. On SIGTERM it
// prints one line of counts to stderr.
import { connect as tcpConnect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { clientHandshake } from '../../dist/transport/ws/auth.js';
import { connect as wsConnect } from '../../dist/transport/ws/socket.js';
import { StoreClient } from '../../dist/rendezvous/store.js';
import { prng } from './random.mjs';

const MAX_OPEN = 40;
const [storeArg, n] = [process.env.SOAK_ATTACK_STORE, Number(process.env.SOAK_ATTACK_NP)];
const token = process.env.SOAK_ATTACK_TOKEN ?? '';
const rng = prng(Number(process.env.SOAK_ATTACK_SEED ?? 7));
const counts = { idle: 0, garbage: 0, unauthFrame: 0, hugeHeader: 0, wrongRank: 0, junkAfterChallenge: 0, refusedOrClosed: 0 };
let open = 0;
let stopping = false;

const [storeHost, storePort] = [storeArg.slice(0, storeArg.lastIndexOf(':')), Number(storeArg.slice(storeArg.lastIndexOf(':') + 1))];
const store = { host: storeHost.replace(/^\[|\]$/g, ''), port: storePort };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A raw TCP connection that writes `bytes` (if any), stays `holdMs`, then is destroyed. */
function raw(target, bytes, holdMs) {
  return new Promise((resolve) => {
    const s = tcpConnect(target.port, target.host);
    s.on('error', () => {});
    s.on('connect', () => bytes && s.write(bytes));
    s.on('close', () => {
      counts.refusedOrClosed += holdMs > 0 ? 0 : 1;
      resolve();
    });
    setTimeout(() => s.destroy(), holdMs);
  });
}

/** An HTTP upgrade to a WebSocket, without the token; sends `data` once open. */
function unauthenticated(target, data, holdMs) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}/`, { maxPayload: 1 << 16 });
    ws.on('error', () => {});
    ws.on('open', () => ws.send(data));
    ws.on('close', () => {
      counts.refusedOrClosed++;
      resolve();
    });
    setTimeout(() => ws.terminate(), holdMs);
  });
}

/** A frame header announcing a 1 GiB binary message (masked, as from a client), then 64 KiB of it. */
function hugeFrame() {
  const header = Buffer.alloc(14);
  header[0] = 0x82;
  header[1] = 0x80 | 127;
  header.writeBigUInt64BE(1n << 30n, 2);
  return Buffer.concat([header, randomBytes(64 << 10)]);
}

async function asTokenHolder(target, rank, junk) {
  let inbox;
  try {
    inbox = await wsConnect(target, 1 << 20, Date.now() + 3000, 'attacker');
    if (junk) {
      // Wait for the challenge, then answer with a 1 MiB message of random bytes.
      await inbox.next(2000);
      inbox.socket.send(randomBytes(1 << 20));
      await inbox.next(2000);
    } else {
      await clientHandshake(inbox, { token, rank, serverId: `rank:${target.rank}`, timeoutMs: 2000, peer: 'attacked rank' });
      await inbox.next(2000); // refused: the socket closes
    }
  } catch {
    counts.refusedOrClosed++;
  } finally {
    inbox?.socket.terminate();
  }
}

async function main() {
  // Like a rank: the ranks' addresses come from the store (the token holder's view).
  const client = await StoreClient.connect(store, token, 0, Date.now() + 60_000);
  const table = await client.get(Array.from({ length: n }, (_, r) => `ring/${r}`), 60_000);
  client.close();
  const ranks = table.map((t, r) => ({ host: t.host, port: t.port, rank: r }));
  const targets = [store, ...ranks];
  while (!stopping) {
    await sleep(20 + rng.int(60));
    if (open >= MAX_OPEN) continue;
    const t = rng.pick(targets);
    const r = rng.pick(ranks);
    const kind = rng.int(6);
    open++;
    const done = () => open--;
    if (kind === 0) (counts.idle++, raw(t, undefined, 500 + rng.int(3500)).then(done));
    else if (kind === 1) (counts.garbage++, raw(t, randomBytes(1 + rng.int(64 << 10)), 200).then(done));
    else if (kind === 2) (counts.unauthFrame++, unauthenticated(t, randomBytes(1 << 20), 2000).then(done));
    else if (kind === 3) (counts.hugeHeader++, raw(t, Buffer.concat([Buffer.from(upgradeRequest(t)), hugeFrame()]), 1000).then(done));
    // A rank that may not connect to r's ring port: beyond the world, or (N >= 3) its left neighbour.
    else if (kind === 4) (counts.wrongRank++, asTokenHolder(r, n >= 3 && rng.int(2) === 0 ? (r.rank + n - 1) % n : n + 3, false).then(done));
    else (counts.junkAfterChallenge++, asTokenHolder(r, 0, true).then(done));
  }
}

/** A valid HTTP upgrade request, so that the bytes after it are read as WebSocket frames. */
function upgradeRequest(t) {
  return `GET / HTTP/1.1\r\nHost: ${t.host}:${t.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
}

process.on('SIGTERM', () => {
  stopping = true;
  const total = Object.entries(counts).filter(([k]) => k !== 'refusedOrClosed').reduce((s, [, v]) => s + v, 0);
  console.error(`soak attacker: ${total} attacks (${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ')})`);
  process.exit(0);
});
main().catch((e) => {
  console.error(`soak attacker: ${e.message}`);
  process.exit(1);
});
