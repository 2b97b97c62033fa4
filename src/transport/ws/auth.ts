import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { RingAuthError, RingTimeoutError } from '../../errors.js';
import { peerValue } from '../../peer-text.js';
import { authenticated, TRY_AGAIN } from './gate.js';
import type { Inbox } from './inbox.js';
import { connect, type Endpoint, type TlsConfig } from './socket.js';
import type { AuthMsg, ChallengeMsg, HandshakeMessage, WelcomeMsg } from '../messages.js';
import { decodeMessage, encodeControl } from '../wire.js';

/**
 * Mutual authentication of a fresh WebSocket with the job token, before any ring traffic:
 *
 *   server -> client  challenge { nonceS, rank/role of the server }
 *   client -> server  auth      { nonceC, client rank, mac = HMAC(token, "c" | nonceS | nonceC | ranks) }
 *   server -> client  welcome   { mac = HMAC(token, "s" | nonceS | nonceC | ranks) }
 *
 * A fresh server nonce per connection defeats replay; the welcome proves the server knows the
 * token too. Anything else — wrong MAC, wrong rank, junk, silence — closes the socket.
 */
const NONCE_BYTES = 32;

function mac(token: string, dir: 'c' | 's', nonceS: Uint8Array, nonceC: Uint8Array, serverId: string, clientRank: number) {
  return createHmac('sha256', token)
    .update(`ringreduce-v1|${dir}|${serverId}|${clientRank}|`)
    .update(nonceS)
    .update(nonceC)
    .digest();
}

function sameMac(a: unknown, b: Buffer): boolean {
  return a instanceof Uint8Array && a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

/** The next message on the inbox, decoded as a handshake message. */
async function nextMessage(inbox: Inbox, timeoutMs: number, peer: string): Promise<HandshakeMessage> {
  const m = await inbox.next(timeoutMs);
  if (m === 'timeout') throw new RingTimeoutError(`${peer} did not complete the handshake within ${timeoutMs} ms`, {});
  if (m === undefined) {
    const why = inbox.error ? `: ${inbox.error.message}` : inbox.closeCode === TRY_AGAIN ? ' (busy: try again)' : '';
    throw new RingAuthError(`${peer} closed the connection during the handshake${why}`);
  }
  if (!m.binary) throw new RingAuthError(`${peer} sent a text frame during the handshake`);
  let d;
  try {
    d = decodeMessage(m.data, peer);
  } catch (e) {
    throw new RingAuthError(`${peer}: ${(e as Error).message}`);
  }
  if (d.kind !== 'control') throw new RingAuthError(`${peer} sent data before authenticating`);
  return d.msg as unknown as HandshakeMessage;
}

export interface ServerHandshakeOptions {
  token: string;
  /** Identifies the server in the MAC: `rank:<r>` or `store`. */
  serverId: string;
  challenge: Omit<ChallengeMsg, 't' | 'nonce'>;
  /** Returns an error message if this client rank may not connect here. */
  admit(clientRank: number): string | undefined;
  timeoutMs: number;
  peer: string;
}

/** Runs the server side; resolves with the client's rank, rejects (without closing) on failure. */
export async function serverHandshake(inbox: Inbox, o: ServerHandshakeOptions): Promise<number> {
  const ws = inbox.socket;
  const nonceS = randomBytes(NONCE_BYTES);
  ws.send(encodeControl({ t: 'challenge', nonce: nonceS, ...o.challenge } satisfies ChallengeMsg));
  const m = await nextMessage(inbox, o.timeoutMs, o.peer);
  if (m.t !== 'auth') throw new RingAuthError(`${o.peer} sent ${peerValue(m.t)} instead of 'auth'`);
  const a = m as AuthMsg;
  if (!Number.isSafeInteger(a.rank) || !(a.nonce instanceof Uint8Array) || a.nonce.byteLength !== NONCE_BYTES) {
    throw new RingAuthError(`${o.peer} sent a malformed 'auth' message`);
  }
  if (!sameMac(a.mac, mac(o.token, 'c', nonceS, a.nonce, o.serverId, a.rank))) {
    throw new RingAuthError(`${o.peer} failed authentication (wrong job token)`);
  }
  const refusal = o.admit(a.rank);
  if (refusal) throw new RingAuthError(`${o.peer} (rank ${a.rank}): ${refusal}`);
  authenticated(ws);
  ws.send(encodeControl({ t: 'welcome', mac: mac(o.token, 's', nonceS, a.nonce, o.serverId, a.rank) } satisfies WelcomeMsg));
  return a.rank;
}

export interface ClientHandshakeOptions {
  token: string;
  rank: number;
  /** The server we expect: `rank:<r>` or `store`. */
  serverId: string;
  timeoutMs: number;
  peer: string;
}

export async function clientHandshake(inbox: Inbox, o: ClientHandshakeOptions): Promise<ChallengeMsg> {
  const ws = inbox.socket;
  const m = await nextMessage(inbox, o.timeoutMs, o.peer);
  if (m.t !== 'challenge' || !(m.nonce instanceof Uint8Array)) {
    throw new RingAuthError(`${o.peer} did not send a challenge`);
  }
  const nonceC = randomBytes(NONCE_BYTES);
  ws.send(
    encodeControl({ t: 'auth', nonce: nonceC, rank: o.rank, mac: mac(o.token, 'c', m.nonce, nonceC, o.serverId, o.rank) } satisfies AuthMsg),
  );
  const w = await nextMessage(inbox, o.timeoutMs, o.peer);
  if (w.t !== 'welcome' || !sameMac(w.mac, mac(o.token, 's', m.nonce, nonceC, o.serverId, o.rank))) {
    throw new RingAuthError(`${o.peer} could not prove it holds the job token (is it part of this job?)`);
  }
  return m;
}

/** How long to wait before trying a dropped handshake again: doubling from 20 ms up to 500 ms. */
const RETRY_MS = [20, 40, 80, 160, 320, 500];

/**
 * Connects (see socket.ts: refused connections are retried until `deadline`) and runs the client
 * handshake. A server that closed the connection before authenticating it, saying "try again"
 * (its gate had too many connections waiting, or this one waited too long: gate.ts) or not
 * saying anything (1006: the connection was cut), is tried again until `deadline` too.
 */
export async function connectAuthenticated(
  e: Endpoint,
  maxPayload: number,
  deadline: number,
  what: string,
  tls: TlsConfig | undefined,
  path: string,
  o: ClientHandshakeOptions,
): Promise<Inbox> {
  for (let attempt = 0; ; attempt++) {
    const inbox = await connect(e, maxPayload, deadline, what, tls, path);
    try {
      await clientHandshake(inbox, o);
      return inbox;
    } catch (err) {
      inbox.socket.terminate();
      const wait = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
      const dropped = inbox.closeCode === TRY_AGAIN || (inbox.closeCode === 1006 && !inbox.error);
      if (!dropped || Date.now() + wait >= deadline) throw err;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}
