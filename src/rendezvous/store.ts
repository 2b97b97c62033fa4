import type { WebSocket, WebSocketServer } from 'ws';
import { RingAuthError, RingProtocolError, RingRendezvousError, RingTimeoutError } from '../errors.js';
import { connectAuthenticated, serverHandshake } from '../transport/ws/auth.js';
import { droppedByGate } from '../transport/ws/gate.js';
import { Inbox } from '../transport/ws/inbox.js';
import { refuse, reportRefusals } from '../transport/ws/refusals.js';
import type { StoreRequest, StoreResponse } from '../transport/messages.js';
import { closeWsServer, formatHost, listen, netServer, wsUrl, type Endpoint, type TlsConfig } from '../transport/ws/socket.js';
import { decodeMessage, encodeControl } from '../transport/wire.js';
import type { Logger } from '../logger.js';
import { peerText, peerValue } from '../peer-text.js';

/**
 * The rendezvous store: a write-once key/value table with blocking reads, served over an
 * authenticated WebSocket. ringrun hosts it for its job; without ringrun, rank 0 hosts it at
 * MASTER_ADDR:MASTER_PORT. Ranks publish their ring address here and read their neighbours'.
 */
const STORE_MAX_PAYLOAD = 1 << 20;
const HANDSHAKE_MS = 10_000;
/** On close: how long the last replies may take to leave before the connections are cut. */
const CLOSE_FLUSH_MS = 500;

function within(ps: Promise<unknown>[], ms: number): Promise<unknown> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([Promise.all(ps), new Promise((r) => (t = setTimeout(r, ms)))]).finally(() => clearTimeout(t));
}

/**
 * What a rank needs from a store: write-once keys, and a read that waits until every key is set.
 * Two implementations: StoreClient (below, the WebSocket store) and FileStore (file-store.ts, a
 * shared directory).
 */
export interface RendezvousStore {
  set(key: string, value: unknown): Promise<void>;
  /** Waits until every key is set; on timeout throws RingTimeoutError carrying the missing keys (`missing`). */
  get(keys: string[], timeoutMs: number): Promise<unknown[]>;
  /** This rank will not read or write `keys` again and nobody else needs them (every rank has read them). */
  release(keys: string[]): Promise<void>;
  /** This side's address of the connection to the store, when there is one. */
  readonly localAddress: string | undefined;
  /** Where the store is, for messages. */
  readonly where: string;
  close(): void;
}

export interface StoreServer {
  readonly endpoint: Endpoint;
  close(): Promise<void>;
  /** Do not keep the process alive for the store's sake. */
  unref(): void;
}

export interface StoreServerOptions {
  host: string;
  port: number;
  token: string;
  /** Ranks allowed to connect are 0..worldSize-1. */
  worldSize: number;
  logger: Logger;
  /** Serve wss:// (see TlsConfig). */
  tls?: TlsConfig;
}

export async function startStoreServer(o: StoreServerOptions): Promise<StoreServer> {
  const { server, endpoint } = await listen(o.host, o.port, STORE_MAX_PAYLOAD, o.tls);
  const refused = reportRefusals(
    server,
    (peer, why) => o.logger.warn(`rendezvous store: refused a connection from ${peer}: ${why}`),
    (message) => o.logger.warn(`rendezvous store at ${formatHost(o.host)}:${endpoint.port}: ${message}`),
  );
  const values = new Map<string, unknown>();
  /** Blocked gets: `reply` answers with the values, `giveUp` with an error naming the keys still missing. */
  type Waiter = { keys: string[]; reply: (values: unknown[]) => void; giveUp: (message: string) => Promise<void>; timer?: NodeJS.Timeout };
  const waiters = new Set<Waiter>();

  const wake = () => {
    for (const w of waiters) {
      if (w.keys.every((k) => values.has(k))) {
        waiters.delete(w);
        w.reply(w.keys.map((k) => values.get(k)));
      }
    }
  };

  server.on('connection', (ws: WebSocket, req) => {
    const address = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const peer = `store client ${address}`;
    const inbox = new Inbox(ws);
    serverHandshake(inbox, {
      token: o.token,
      serverId: 'store',
      challenge: { rank: -1, role: 'store' },
      admit: (r) => (r >= 0 && r < o.worldSize ? undefined : `rank ${r} is outside this job of ${o.worldSize} ranks`),
      timeoutMs: HANDSHAKE_MS,
      peer,
    }).then(
      (rank) => serve(ws, inbox, `rank ${rank} (${peer})`),
      (e: Error) => {
        if (droppedByGate(ws)) return; // reported by the gate
        refused(address, e.message);
        refuse(ws, 1008, 'authentication failed');
      },
    );
  });

  function serve(ws: WebSocket, inbox: Inbox, who: string) {
    const mine = new Set<Waiter>();
    const send = (m: StoreResponse, sent?: () => void) => ws.send(encodeControl(m), () => sent?.());
    ws.on('close', () => {
      for (const w of mine) {
        waiters.delete(w);
        clearTimeout(w.timer);
      }
    });
    inbox.drain((data) => {
      let req: StoreRequest;
      try {
        const d = decodeMessage(data, who);
        if (d.kind !== 'control') throw new Error('data frame sent to the store');
        req = d.msg as unknown as StoreRequest;
        if (typeof req.id !== 'number') throw new Error('request without id');
      } catch (e) {
        o.logger.warn(`rendezvous store: closing ${who}: ${(e as Error).message}`);
        refuse(ws, 1002, 'protocol error');
        return;
      }
      if (req.t === 'set' && typeof req.key === 'string') {
        if (values.has(req.key) && JSON.stringify(values.get(req.key)) !== JSON.stringify(req.value)) {
          send({ t: 'err', id: req.id, message: `key '${peerText(req.key)}' is already set by another process` });
          return;
        }
        values.set(req.key, req.value);
        send({ t: 'ok', id: req.id });
        wake();
      } else if (req.t === 'get' && Array.isArray(req.keys) && req.keys.every((k) => typeof k === 'string')) {
        const id = req.id;
        const w: Waiter = {
          keys: req.keys,
          reply: (vals: unknown[]) => {
            clearTimeout(w.timer);
            mine.delete(w);
            send({ t: 'ok', id, values: vals });
          },
          giveUp: (message: string) =>
            new Promise<void>((sent) => {
              clearTimeout(w.timer);
              waiters.delete(w);
              mine.delete(w);
              send({ t: 'err', id, message, missing: w.keys.filter((k) => !values.has(k)) }, sent);
            }),
        };
        // A get blocks at most this long; a client that leaves cancels it (see 'close').
        w.timer = setTimeout(() => void w.giveUp('timed out'), Math.max(0, Math.min(Number(req.timeoutMs) || 0, 2 ** 31 - 1)));
        waiters.add(w);
        mine.add(w);
        wake();
      } else {
        send({ t: 'err', id: req.id, message: `bad request ${peerValue((req as { t?: unknown }).t)}` });
      }
    });
  }

  return {
    endpoint,
    // A store closing under blocked gets (rank 0 hosting it gave up) tells them which keys are
    // missing, so that every rank reports the ranks that never arrived, not a lost connection.
    close: async () => {
      await within([...waiters].map((w) => w.giveUp('timed out (the store is closing)')), CLOSE_FLUSH_MS);
      await closeServer(server);
    },
    unref: () => netServer(server)?.unref(),
  };
}

export function closeServer(server: WebSocketServer): Promise<void> {
  return closeWsServer(server);
}

/** What launchers need to name and reach a store, without reaching into the transport. */
export { formatHost, wsUrl as storeUrl, type Endpoint, type TlsConfig };

/** The store's own words in an error (it is a peer: see peer-text.ts). */
const storeText = (m: unknown): string => (typeof m === 'string' ? peerText(m, 1000) : peerValue(m));

/** A rank's connection to the store. */
export class StoreClient implements RendezvousStore {
  private nextId = 1;
  private pending = new Map<number, { resolve(m: StoreResponse): void; reject(e: Error): void }>();
  private closedError: Error | undefined;

  private constructor(private readonly inbox: Inbox, readonly where: string) {
    const ws = inbox.socket;
    inbox.drain((data) => {
      try {
        const d = decodeMessage(data, `the rendezvous store at ${where}`);
        const m = d.kind === 'control' ? (d.msg as unknown as StoreResponse) : undefined;
        const p = m && (m.t === 'ok' || m.t === 'err') && this.pending.get(m.id);
        if (!p || !m) throw new RingProtocolError(`the rendezvous store at ${where} sent an unexpected reply`);
        this.pending.delete(m.id);
        p.resolve(m);
      } catch (e) {
        this.closedError ??= e as Error;
        ws.terminate();
      }
    });
    ws.on('close', () => {
      this.closedError ??= new RingRendezvousError(`lost the connection to the rendezvous store at ${where}`);
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
    });
  }

  static async connect(e: Endpoint, token: string, rank: number, deadline: number, tls?: TlsConfig): Promise<StoreClient> {
    const where = wsUrl(e, tls).replace(/\/$/, '');
    let inbox: Inbox;
    try {
      const peer = `the rendezvous store at ${where}`;
      inbox = await connectAuthenticated(e, STORE_MAX_PAYLOAD, deadline, 'the rendezvous store', tls, '/', { token, rank, serverId: 'store', timeoutMs: HANDSHAKE_MS, peer });
    } catch (err) {
      if (err instanceof RingAuthError) {
        throw new RingAuthError(`rank ${rank}: the rendezvous store at ${where} refused us or failed to authenticate: ${err.message} (do all ranks share the job token?)`);
      }
      throw err;
    }
    return new StoreClient(inbox, where);
  }

  private request(m: StoreRequest): Promise<StoreResponse> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      this.pending.set(m.id, { resolve, reject });
      this.inbox.socket.send(encodeControl(m));
    });
  }

  async set(key: string, value: unknown): Promise<void> {
    const r = await this.request({ t: 'set', id: this.nextId++, key, value });
    if (r.t === 'err') throw new RingRendezvousError(`rendezvous store: ${storeText(r.message)}`);
  }

  /** Waits until every key is set; on timeout throws RingTimeoutError carrying the missing keys. */
  async get(keys: string[], timeoutMs: number): Promise<unknown[]> {
    const r = await this.request({ t: 'get', id: this.nextId++, keys, timeoutMs });
    if (r.t === 'ok') return r.values ?? [];
    if (Array.isArray(r.missing)) {
      const missing = r.missing.filter((k): k is string => typeof k === 'string' && keys.includes(k));
      throw Object.assign(new RingTimeoutError(`rendezvous store: ${storeText(r.message)}`, {}), { missing });
    }
    throw new RingRendezvousError(`rendezvous store: ${storeText(r.message)}`);
  }

  /** Keys live in the store's memory until it closes. */
  async release(): Promise<void> {}

  /** This side's address of the connection: the interface that routes to the store. */
  get localAddress(): string | undefined {
    const a = (this.inbox.socket as unknown as { _socket?: { localAddress?: string } })._socket?.localAddress;
    return a?.startsWith('::ffff:') ? a.slice(7) : a;
  }

  close(): void {
    this.inbox.socket.close();
  }
}
