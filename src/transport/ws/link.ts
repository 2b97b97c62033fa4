import { WebSocket } from 'ws';
import { RingProtocolError } from '../../errors.js';
import type { Inbox } from './inbox.js';
import { MessageLink } from '../link.js';
import { encodeDataHeader, KIND_DATA_HEADER, type DataHeader } from '../wire.js';
import { WAKE } from '../shm/region.js';
import { LinkRegion } from '../shm/link-region.js';
import type { Mailbox } from '../shm/mailbox.js';
import { LinkReader } from './takeover.js';

/** Below this many payload bytes a data frame is one message (header + a copy of the payload). */
const SMALL_PAYLOAD = 64 * 1024;

/** A ring link over an authenticated WebSocket. */
export class WsLink extends MessageLink {
  private readonly ws: WebSocket;

  constructor(peer: number, describe: string, inbox: Inbox) {
    super(peer, describe);
    this.ws = inbox.socket;
    this.ws.on('close', (code: number) => this.ended(new Error(`connection to ${describe} closed (code ${code})`)));
    // A peer that breaks RFC 6455 (oversized message, bad opcode, ...): the reader reports it
    // with a RingProtocolError (takeover.ts); ws, while it reads, with a WS_ERR_* code.
    this.ws.on('error', (e: Error & { code?: unknown }) =>
      this.ended(
        e instanceof RingProtocolError || !String(e.code).startsWith('WS_ERR_') ? e : new RingProtocolError(`${describe} broke the WebSocket protocol: ${e.message}`),
      ),
    );
    this.reader = LinkReader.for(this.ws, describe, (data) => this.socketMessage(data, true));
    inbox.drain((data, binary) => this.socketMessage(data, binary));
    this.reader?.start();
  }

  /** Reads the socket's frames once ws has read the handshake (see takeover.ts); undefined where ws reads on. */
  private readonly reader: LinkReader | undefined;

  private socketMessage(data: Buffer, binary: boolean): void {
    this.socketReceived++;
    // Mailbox entries written before this socket message come first (see Mailbox), even when
    // paused: a socket message that was read already still arrives, and must keep its place.
    if (this.inBox) this.drainMailbox(this.socketReceived - 1, true);
    if (binary) this.receive(data);
    else this.fail(new RingProtocolError(`text frame from ${this.describe}`));
    if (this.inBox) this.drainMailbox(this.socketReceived);
  }

  /**
   * A payload goes where its owner wants it, or else into this link's scratch buffer: handlers
   * get payloads only for the call (LinkHandlers.data; shared-memory slots are handed back just
   * after), so one buffer serves every payload, and the reader does not allocate (and the CPU
   * fault in, and the GC collect) a fresh chunk-sized buffer per frame.
   */
  protected override payloadComing(place: Uint8Array | undefined, length: number): void {
    const r = this.reader;
    if (!r) return;
    if (place && place.byteLength === length) return r.land(place);
    if (length === 0) return r.land(undefined);
    if (this.scratch.byteLength < length) this.scratch = new Uint8Array(length);
    r.land(this.scratch.subarray(0, length));
  }
  private scratch = new Uint8Array(0);

  // ---- socket and mailbox (see shm/mailbox.ts) ----------------------------------------------
  /** Messages sent on / received from the WebSocket since this link was made. */
  private socketSent = 0;
  private socketReceived = 0;
  private outBox: Mailbox | undefined;
  private inBox: Mailbox | undefined;
  private draining = false;
  private mailboxSent = 0;

  /** Messages this side sent, by the way they went (for tests and diagnostics). */
  get sent(): { socket: number; mailbox: number } {
    return { socket: this.socketSent, mailbox: this.mailboxSent };
  }

  private sendWs(data: Uint8Array, done?: (err?: Error) => void): void {
    this.socketSent++;
    if (done) this.ws.send(data, { binary: true }, (err) => done(err ?? undefined));
    else this.ws.send(data, { binary: true });
  }

  /** One message, through the peer's mailbox while it polls, else the socket. */
  private post(parts: Uint8Array[], done?: (err?: Error) => void): void {
    const box = this.outBox;
    if (box) {
      const bytes = parts.length === 1 ? parts[0].byteLength : parts.reduce((n, p) => n + p.byteLength, 0);
      const posted = box.post(parts, bytes, this.socketSent);
      if (posted !== 0) {
        this.mailboxSent++;
        if (posted === 2) {
          this.cork();
          this.sendWs(WAKE);
        }
        if (done) queueMicrotask(done);
        return;
      }
    }
    this.cork();
    this.sendWs(parts.length === 1 ? parts[0] : Buffer.concat(parts), done);
  }

  /**
   * Takes what the peer's mailbox holds that may be handled once `socketReceived` socket messages
   * have; not while paused, unless a socket message that arrived anyway needs them handled first.
   */
  private drainMailbox(socketReceived = this.socketReceived, beforeSocketMessage = false): void {
    const box = this.inBox;
    if (!box || this.draining || (this.paused && !beforeSocketMessage)) return;
    this.draining = true;
    try {
      for (let m = box.take(socketReceived); m && !this.isClosed; m = box.take(socketReceived)) this.receive(m);
    } catch (e) {
      this.fail(e as Error);
    } finally {
      this.draining = false;
    }
  }

  /** Called by a polling owner: handles what arrived in the mailbox. */
  poll(): void {
    if (this.inBox && !this.isClosed) this.drainMailbox();
  }

  /**
   * The owner polls (the peer may use the mailbox) or is about to sleep (the peer must use the
   * socket); going to sleep looks at the mailbox one last time (see Mailbox).
   */
  setPolling(on: boolean): void {
    const box = this.inBox;
    if (!box || this.isClosed) return;
    box.setAwake(on);
    if (!on) this.drainMailbox();
  }

  // ---- backpressure -----------------------------------------------------------------------------
  private paused = false;

  /**
   * Stops reading the peer's messages, or resumes (Link.pause). The socket stops being read, so
   * the peer's writes back up into its own socket buffer and its sends wait for their callbacks;
   * the mailbox is not drained either (while it is full the peer writes to the socket).
   */
  pause(on: boolean): void {
    if (on === this.paused || this.isClosed) return;
    this.paused = on;
    if (on) this.ws.pause();
    else {
      this.ws.resume();
      this.drainMailbox();
    }
  }

  // ---- shared memory (see shm/link-region.ts) ---------------------------------------------------
  private readonly region = new LinkRegion({
    peer: this.peer,
    describe: this.describe,
    closed: () => this.isClosed,
    sendSocket: (m) => this.sendWs(m),
    post: (parts, done) => this.post(parts, done),
    sendFrame: (header, payload, done) => this.sendFrame(header, payload, done),
    deliver: (header, payload, pin) => this.deliverData(header, payload, pin),
    mailboxes: (boxes) => {
      this.outBox = boxes.out;
      this.inBox = boxes.in;
    },
  });

  /** True once payloads on this link (to or from the peer) go through shared memory. */
  get sharedMemory(): boolean {
    return this.region.active;
  }

  /**
   * As the sending side of this link: offer `slots` shared slots of `payloadBytes` (or, when
   * `enabled` is false or this host cannot, say there is no offer). Resolves to undefined when
   * the peer accepted, else to the reason.
   */
  offerSharedMemory(enabled: boolean, slots: number, payloadBytes: number, timeoutMs: number): Promise<string | undefined> {
    return this.region.offer(enabled, slots, payloadBytes, timeoutMs);
  }

  /** As the receiving side: waits for the peer's offer and maps its region if it is on this host. */
  acceptSharedMemory(enabled: boolean, maxPayload: number, timeoutMs: number): Promise<string | undefined> {
    return this.region.accept(enabled, maxPayload, timeoutMs);
  }

  protected override linkMessage(buf: Uint8Array): void {
    try {
      this.region.message(buf);
    } catch (e) {
      this.fail(e as Error);
    }
  }

  /** See Link.sendFilled and LinkRegion.sendFilled. */
  sendFilled(header: DataHeader, bytes: number, fill: (dst: Uint8Array) => number, done: (err?: Error) => void): boolean {
    if (this.isClosed || this.ws.readyState !== WebSocket.OPEN) return false; // sendData reports it
    return this.region.sendFilled(header, bytes, fill, done);
  }

  protected override ended(error: Error | undefined): void {
    // The peer must not post into a mailbox nobody reads any more.
    this.inBox?.setAwake(false);
    const waiting = this.region.end();
    super.ended(error);
    for (const done of waiting) done(new Error(`connection to ${this.describe} is closed`));
  }

  /** Through the region when the link sends through one (frames keep their order there), else sendFrame. */
  override sendData(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): void {
    if (!this.writable(done)) return;
    if (!this.region.send(header, payload, done)) this.sendFrame(header, payload, done);
  }

  /**
   * A frame through no shared slot. Large payloads go as two messages back to back, header then
   * payload, so the payload is written straight from the caller's array; small ones are cheaper
   * copied into one message.
   */
  private sendFrame(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): void {
    if (payload.byteLength < SMALL_PAYLOAD) return super.sendData(header, payload, done);
    // Header and payload are consecutive socket messages (the payload is raw): never the mailbox.
    this.cork();
    this.sendWs(encodeDataHeader(header, payload.byteLength, KIND_DATA_HEADER));
    this.sendWs(payload, done);
  }

  /**
   * Everything sent in one synchronous stretch leaves in one writev: a collective's descriptor and
   * its first frames (or a burst of forwarded chunks) cost one system call instead of one each.
   * Uncorked in a microtask, not a process.nextTick: Node runs nextTick callbacks queued from a
   * microtask only once the microtask queue is empty, so a sender that went on in a chain of
   * awaits resolving at once (data already there, a compute, the next send) kept its messages
   * corked until it awaited something truly pending. A microtask runs in turn with that chain's.
   */
  private corked = false;
  private cork(): void {
    if (this.corked) return;
    const sock = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    if (!sock) return;
    this.corked = true;
    sock.cork();
    queueMicrotask(() => {
      this.corked = false;
      sock.uncork();
    });
  }

  private writable(done: (err?: Error) => void): boolean {
    if (this.isClosed || this.ws.readyState !== WebSocket.OPEN) {
      queueMicrotask(() => done(new Error(`connection to ${this.describe} is closed`)));
      return false;
    }
    return true;
  }

  protected write(parts: Uint8Array[], done: (err?: Error) => void): void {
    if (!this.writable(done)) return;
    this.post(parts, done);
  }

  protected closeTransport(): void {
    this.inBox?.setAwake(false);
    // The closing handshake needs the peer's close frame read.
    if (this.paused) {
      this.paused = false;
      this.ws.resume();
    }
    // Flush what is queued, then close; do not let a dead peer hold the process for ws's 30 s.
    const ws = this.ws;
    if (ws.readyState === WebSocket.OPEN) ws.close(1000);
    const t = setTimeout(() => ws.terminate(), 2000);
    t.unref();
    ws.once('close', () => clearTimeout(t));
  }

  private get socket(): { ref(): void; unref(): void } | undefined {
    return (this.ws as unknown as { _socket?: { ref(): void; unref(): void } })._socket;
  }
  ref(): void {
    this.socket?.ref();
  }
  unref(): void {
    this.socket?.unref();
  }
}
