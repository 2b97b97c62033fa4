import type { Server as NetServer, Socket } from 'node:net';
import type { WebSocket } from 'ws';

/**
 * The door of a rank's or the store's server: what a stranger without the job token may hold.
 * A connection is PENDING from the moment TCP accepts it until the job token's MAC verifies
 * (`authenticated`, called by auth.ts), and while pending it gets little:
 *
 *   - a deadline: PENDING_MS (2 s) from the TCP accept for the whole of HTTP upgrade and
 *     handshake, then the socket is destroyed (an idle connection used to hold a server open, so
 *     that closing it waited for the stranger: ringrun ran on for a minute after its ranks);
 *   - a cap: at most MAX_PENDING per server; a new connection beyond it pushes out the OLDEST
 *     pending one (a handshake of the job takes milliseconds, a stranger's idle sockets are the old
 *     ones), so strangers cannot use up this process's file descriptors;
 *   - messages of at most PENDING_MAX_PAYLOAD bytes (ws refuses a longer frame from its header,
 *     before buffering it: 1 MiB frames on 2,000 connections used to take 2 GB), and one message
 *     (the 'auth'): a second one before the MAC verifies closes the connection.
 *
 * A pending socket does not keep the process alive (unref), and closing the server destroys every
 * pending socket at once. Clients of ringreduce try again when a connection is closed this way
 * (close code TRY_AGAIN; see connectAuthenticated in auth.ts), until their own deadline.
 *
 * The payload limit is set on ws's Receiver (`_receiver._maxPayload`, there since ws 7) while the
 * connection is pending and restored after: where ws lacks it, pending connections simply get the
 * server's own limit (test/hostile-stranger.test.ts checks that it is there).
 */
export const PENDING_MS = 2000;
export const MAX_PENDING = 128;
export const PENDING_MAX_PAYLOAD = 4096;
/**
 * How long a dropped connection may go on sending (discarded) after our close frame and FIN,
 * and how many such connections linger at once (beyond that they are cut at once).
 */
const LINGER_MS = 500;
const MAX_LINGERING = 128;
/** Messages a client may send before its MAC verifies: the 'auth'. */
const PENDING_MESSAGES = 1;
/** Close code of a connection the gate drops: RFC 6455's "try again later". */
export const TRY_AGAIN = 1013;

interface Entry {
  socket: Socket;
  peer: string;
  timer: NodeJS.Timeout;
  ws?: WebSocket;
  messages: number;
  onMessage?: () => void;
  onError?: (e: Error) => void;
  /** Gives the WebSocket back the server's payload limit. */
  restore?: () => void;
}

interface WsReceiver {
  _maxPayload: number;
}

const byWs = new WeakMap<WebSocket, { gate: Gate; entry: Entry }>();
const dropped = new WeakSet<WebSocket>();

export class Gate {
  /** Pending connections by TCP socket, oldest first (a Map keeps insertion order). */
  private readonly pending = new Map<Socket, Entry>();
  /** Dropped connections still draining what their client sends (see drop). */
  private lingering = 0;
  /** Told about every connection the gate drops (see reportRefusals). */
  onDrop: (peer: string, why: string) => void = () => {};

  constructor(server: NetServer) {
    server.on('connection', (socket: Socket) => this.arrived(socket));
  }

  /** Connections waiting to authenticate now. */
  get size(): number {
    return this.pending.size;
  }

  private arrived(socket: Socket): void {
    if (this.pending.size >= MAX_PENDING) {
      const oldest = this.pending.values().next().value as Entry;
      this.drop(oldest, `${MAX_PENDING} connections were waiting to authenticate: the oldest made room for a new one`);
    }
    const entry: Entry = { socket, peer: `${socket.remoteAddress}:${socket.remotePort}`, messages: 0, timer: setTimeout(() => this.expire(entry), PENDING_MS) };
    entry.timer.unref();
    this.pending.set(socket, entry);
    socket.unref();
    socket.once('close', () => this.forget(entry));
  }

  private expire(entry: Entry): void {
    // Timers run before I/O in a turn of the event loop: after a long synchronous stretch of this
    // process, a client's 'auth' may be waiting, unread, in the socket. setImmediate runs after
    // this turn has read it (and verified it, if it came).
    setImmediate(() => {
      if (this.pending.get(entry.socket) === entry) this.drop(entry, `did not authenticate within ${PENDING_MS / 1000} s`);
    });
  }

  /** A WebSocket on a pending connection (for TLS, `socket` is the TLSSocket over the TCP one). */
  upgraded(ws: WebSocket, socket: Socket): void {
    const entry = this.pending.get(socket) ?? this.pending.get((socket as { _parent?: Socket })._parent!);
    if (!entry) return;
    entry.ws = ws;
    byWs.set(ws, { gate: this, entry });
    const r = (ws as unknown as { _receiver?: WsReceiver })._receiver;
    if (r && typeof r._maxPayload === 'number' && (r._maxPayload === 0 || r._maxPayload > PENDING_MAX_PAYLOAD)) {
      const own = r._maxPayload;
      r._maxPayload = PENDING_MAX_PAYLOAD;
      entry.restore = () => (r._maxPayload = own);
    }
    entry.onMessage = () => {
      if (++entry.messages > PENDING_MESSAGES) this.drop(entry, `sent more than ${PENDING_MESSAGES} message before authenticating`);
    };
    ws.on('message', entry.onMessage);
    // ws reports a frame over the limit (or any other breach of RFC 6455) and then reads on, to
    // discard the rest of it, until the closing handshake ends: a stranger's megabytes. Not here.
    entry.onError = (e: Error) => {
      const over = (e as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';
      this.drop(entry, over ? `sent a message over ${PENDING_MAX_PAYLOAD} bytes before authenticating` : `broke the WebSocket protocol before authenticating (${e.message})`);
    };
    ws.on('error', entry.onError);
  }

  private forget(entry: Entry): void {
    clearTimeout(entry.timer);
    if (entry.onMessage) entry.ws?.off('message', entry.onMessage);
    if (entry.onError) entry.ws?.off('error', entry.onError);
    if (this.pending.get(entry.socket) === entry) this.pending.delete(entry.socket);
  }

  private drop(entry: Entry, why: string): void {
    this.forget(entry);
    this.onDrop(entry.peer, why);
    if (!entry.ws) return void entry.socket.destroy();
    dropped.add(entry.ws);
    // The close frame tells a client of ours that was merely slow to try again (ws has sent its own,
    // e.g. 1009, when the client broke a limit); the stranger's half of the closing handshake is not
    // waited for.
    if (entry.ws.readyState === entry.ws.OPEN) entry.ws.close(TRY_AGAIN, 'try again');
    this.linger(entry.ws, entry.socket);
  }

  /**
   * Ends a connection whose close frame is written: FIN after it, and what the client still sends
   * is read and dropped (ws stops decoding a connection that broke a limit) until the client ends
   * too, or LINGER_MS. Destroyed at once instead, the socket would answer the client's unread bytes
   * with a reset, and a client still writing (a 1 MB first message) would lose our close frame:
   * its reset takes the frame with it.
   */
  private linger(ws: WebSocket, socket: Socket): void {
    if (this.lingering >= MAX_LINGERING) return void (ws.terminate(), socket.destroy());
    this.lingering++;
    const timer = setTimeout(() => (ws.terminate(), socket.destroy()), LINGER_MS);
    timer.unref();
    socket.once('close', () => (this.lingering--, clearTimeout(timer)));
    socket.end();
  }

  /** The connection's MAC verified: the server's own limits from now on. */
  admit(entry: Entry): void {
    this.forget(entry);
    entry.restore?.();
    entry.socket.ref();
  }

  /** Destroys every pending connection (the server is closing). */
  closeAll(): void {
    for (const entry of [...this.pending.values()]) {
      this.forget(entry);
      entry.ws?.terminate();
      entry.socket.destroy();
    }
  }
}

/**
 * Called once the job token's MAC of a server-side connection verified and the server admits
 * the client (auth.ts): the connection leaves the gate (no deadline, the server's payload limit,
 * any number of messages, and it keeps the process alive).
 */
export function authenticated(ws: WebSocket): void {
  const g = byWs.get(ws);
  if (!g) return;
  byWs.delete(ws);
  g.gate.admit(g.entry);
}

/** Whether the gate closed this connection (and has reported why). */
export const droppedByGate = (ws: WebSocket): boolean => dropped.has(ws);
