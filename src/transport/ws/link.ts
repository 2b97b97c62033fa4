import { WebSocket } from 'ws';
import { RingPeerLostError, RingProtocolError } from '../../errors.js';
import type { Inbox } from './inbox.js';
import { MessageLink } from '../link.js';
import { DATA_HEADER_BYTES, decodeMessage, encodeDataHeader, KIND_DATA_HEADER, type DataHeader } from '../wire.js';
import {
  acceptOffer,
  createRegion,
  decodeReply,
  encodeFree,
  encodeReply,
  encodeShmData,
  KIND_SHM_DATA,
  KIND_SHM_FREE,
  KIND_SHM_OFFER,
  KIND_SHM_REPLY,
  KIND_SHM_WAKE,
  mailboxes,
  noOffer,
  NO_OFFER,
  shmAvailable,
  slotOf,
  slotView,
  unlinkQuietly,
  WAKE,
  type ShmRegion,
} from '../shm/region.js';
import type { Mailbox } from '../shm/mailbox.js';
import { LinkReader } from './takeover.js';

/** A frame's payload: its bytes, or (see WsLink.sendFilled) how to write them into a slot. */
type Payload = Uint8Array | { bytes: number; fill: (dst: Uint8Array) => number };

/** Below this many payload bytes a data frame is one message (header + a copy of the payload). */
const SMALL_PAYLOAD = 64 * 1024;
/** From this many payload bytes a frame goes through shared memory, when the link has it. */
const SHM_MIN_BYTES = 16 * 1024;

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

  // ---- socket and mailbox (see mailbox.ts) ---------------------------------------------------
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

  // ---- shared memory (see shm.ts) ----------------------------------------------------------
  /** This side sends data through the peer-mapped region: free slots, and frames waiting for one. */
  private tx: { region: ShmRegion; free: number[]; waiting: Array<[DataHeader, Payload, (err?: Error) => void]> } | undefined;
  /** The peer sends data through this region (each slot is handed back as soon as it is read). */
  private rx: { region: ShmRegion } | undefined;
  private offerWaiter: ((m: Uint8Array | undefined) => void) | undefined;
  private replyWaiter: ((m: Uint8Array | undefined) => void) | undefined;
  private pendingOffer: Uint8Array | undefined;
  private pendingReply: Uint8Array | undefined;
  private offered = false;

  /** True once payloads on this link (to or from the peer) go through shared memory. */
  get sharedMemory(): boolean {
    return this.tx !== undefined || this.rx !== undefined;
  }

  /**
   * As the sending side of this link: offer `slots` shared slots of `payloadBytes` (or, when
   * `enabled` is false or this host cannot, say there is no offer). Resolves to undefined when
   * the peer accepted, else to the reason.
   */
  async offerSharedMemory(enabled: boolean, slots: number, payloadBytes: number, timeoutMs: number): Promise<string | undefined> {
    if (this.pendingOffer) throw new RingProtocolError(`${this.describe} offered shared memory on a link where it receives`);
    this.offered = true;
    const why = enabled ? shmAvailable() : 'shared memory is disabled on this rank';
    if (why !== undefined) {
      this.sendWs(noOffer());
      return why;
    }
    const made = createRegion(slots, payloadBytes);
    if (typeof made === 'string') {
      // No room for the region (a small /dev/shm): payloads on this link go through the socket.
      this.sendWs(noOffer());
      return made;
    }
    const { region, offer, path } = made;
    try {
      this.sendWs(offer);
      const m = await this.await('reply', timeoutMs);
      const reply = decodeReply(m, this.describe);
      if (!reply.ok) return reply.reason;
      this.tx = { region, free: Array.from({ length: slots }, (_, i) => slots - 1 - i), waiting: [] };
      ({ out: this.outBox, in: this.inBox } = mailboxes(region, true, this.describe));
      return undefined;
    } finally {
      unlinkQuietly(path);
    }
  }

  /** As the receiving side: waits for the peer's offer and maps its region if it is on this host. */
  async acceptSharedMemory(enabled: boolean, maxPayload: number, timeoutMs: number): Promise<string | undefined> {
    const m = await this.await('offer', timeoutMs);
    const r = acceptOffer(m, maxPayload, enabled, this.describe);
    if (r === NO_OFFER) return r;
    if (typeof r === 'string') {
      this.sendWs(encodeReply(false, r));
      return r;
    }
    this.rx = { region: r };
    ({ out: this.outBox, in: this.inBox } = mailboxes(r, false, this.describe));
    this.sendWs(encodeReply(true, ''));
    return undefined;
  }

  private await(what: 'offer' | 'reply', timeoutMs: number): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const early = what === 'offer' ? this.pendingOffer : this.pendingReply;
      if (early) return resolve(early);
      // The peer hung up: that is a lost peer, like a close at any later moment.
      const lost = () => new RingPeerLostError(`connection to ${this.describe} closed during shared-memory set-up`, { ranks: [this.peer] });
      if (this.isClosed) return reject(lost());
      const timer = setTimeout(() => reject(new RingProtocolError(`${this.describe} sent no shared-memory ${what} within ${timeoutMs} ms`)), timeoutMs);
      const settle = (m: Uint8Array | undefined) => {
        clearTimeout(timer);
        if (m) resolve(m);
        else reject(lost());
      };
      if (what === 'offer') this.offerWaiter = settle;
      else this.replyWaiter = settle;
    });
  }

  protected override linkMessage(buf: Uint8Array): void {
    try {
      switch (buf[0]) {
        case KIND_SHM_OFFER:
        case KIND_SHM_REPLY: {
          const offer = buf[0] === KIND_SHM_OFFER;
          // One offer per link, to the side that does not offer; a reply only to an offer.
          if (offer ? this.pendingOffer || this.offered : !this.replyWaiter) {
            throw new RingProtocolError(`unexpected shared-memory ${offer ? 'offer' : 'reply'} from ${this.describe}`);
          }
          const copy = Uint8Array.from(buf);
          if (offer) this.pendingOffer = copy;
          else this.pendingReply = copy;
          const w = offer ? this.offerWaiter : this.replyWaiter;
          if (offer) this.offerWaiter = undefined;
          else this.replyWaiter = undefined;
          w?.(copy);
          return;
        }
        case KIND_SHM_DATA:
          return this.shmData(buf);
        case KIND_SHM_FREE:
          return this.shmFree(slotOf(buf, this.describe));
        case KIND_SHM_WAKE:
          return; // the mailbox was drained around it
      }
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private shmData(buf: Uint8Array): void {
    const rx = this.rx;
    if (!rx) throw new RingProtocolError(`shared-memory data from ${this.describe}, which has no region here`);
    const slot = slotOf(buf, this.describe);
    const head = new Uint8Array(buf.subarray(0, DATA_HEADER_BYTES));
    head[0] = KIND_DATA_HEADER;
    const d = decodeMessage(head, this.describe);
    if (d.kind !== 'header') throw new RingProtocolError(`bad shared-memory data notice from ${this.describe}`);
    const length = d.length;
    if (slot >= rx.region.slots || length > rx.region.slotBytes) {
      throw new RingProtocolError(`shared-memory notice from ${this.describe} is out of its region (slot ${slot}, ${length} bytes)`);
    }
    let pinned = false;
    const pin = () => {
      pinned = true;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        if (!this.isClosed) this.post([encodeFree(slot)]);
      };
    };
    this.deliverData(d.header, slotView(rx.region, slot, length), pin);
    // Unless the handler kept the slot, it is done with it (it copied what it keeps): hand it back.
    if (pinned || this.isClosed) return;
    this.post([encodeFree(slot)]);
  }

  private shmFree(slot: number): void {
    const tx = this.tx;
    if (!tx || slot >= tx.region.slots || tx.free.includes(slot)) {
      throw new RingProtocolError(`${this.describe} handed back shared-memory slot ${slot}, which it did not hold`);
    }
    tx.free.push(slot);
    // Frames that waited for a slot go first, in order (small ones among them take none).
    while (tx.waiting.length > 0 && this.sendNow(...tx.waiting[0])) tx.waiting.shift();
  }

  /**
   * A frame written straight into a shared slot: now if one is free and nothing waits, else when
   * one frees (in order with the other waiting frames). Before, a frame without a free slot was
   * made in a buffer and copied into the slot later: an extra pass over every such frame.
   */
  sendFilled(header: DataHeader, bytes: number, fill: (dst: Uint8Array) => number, done: (err?: Error) => void): boolean {
    const tx = this.tx;
    if (!tx || bytes < SHM_MIN_BYTES || bytes > tx.region.slotBytes) return false;
    if (this.isClosed || this.ws.readyState !== WebSocket.OPEN) return false; // sendData reports it
    if (tx.waiting.length === 0 && tx.free.length > 0) this.shmSend(tx.free.pop()!, header, bytes, fill, done);
    else tx.waiting.push([header, { bytes, fill }, done]);
    return true;
  }

  /** Writes a frame's payload into `slot` with `fill` (which returns its scale) and sends the notice. */
  private shmSend(slot: number, header: DataHeader, bytes: number, fill: (dst: Uint8Array) => number, done: (err?: Error) => void): void {
    const scale = fill(slotView(this.tx!.region, slot, bytes));
    this.post([encodeShmData({ ...header, scale }, bytes, slot)], done);
  }

  protected override ended(error: Error | undefined): void {
    // The peer must not post into a mailbox nobody reads any more.
    this.inBox?.setAwake(false);
    const waiting = this.tx?.waiting.splice(0) ?? [];
    for (const w of [this.offerWaiter, this.replyWaiter]) w?.(undefined);
    this.offerWaiter = this.replyWaiter = undefined;
    super.ended(error);
    for (const [, , done] of waiting) done(new Error(`connection to ${this.describe} is closed`));
  }

  /**
   * Payloads of SHM_MIN_BYTES and more go through shared memory when the link has it. Otherwise
   * large payloads go as two messages back to back, header then payload, so the payload is
   * written straight from the caller's array; small ones are cheaper copied into one message.
   */
  override sendData(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): void {
    if (!this.writable(done)) return;
    const tx = this.tx;
    // Frames leave in order: while one waits for a shared slot, every later frame waits behind it.
    if (tx && (tx.waiting.length > 0 || !this.sendNow(header, payload, done))) tx.waiting.push([header, payload, done]);
    else if (!tx) this.sendNow(header, payload, done);
  }

  /** Sends a frame now; false (nothing sent) when it needs a shared slot and none is free. */
  private sendNow(header: DataHeader, payload: Payload, done: (err?: Error) => void): boolean {
    const tx = this.tx;
    if (!(payload instanceof Uint8Array)) {
      // A frame made when it leaves (sendFilled): always for a slot.
      const slot = tx!.free.pop();
      if (slot === undefined) return false;
      this.shmSend(slot, header, payload.bytes, payload.fill, done);
      return true;
    }
    if (tx && payload.byteLength >= SHM_MIN_BYTES && payload.byteLength <= tx.region.slotBytes) {
      const slot = tx.free.pop();
      if (slot === undefined) return false;
      const copy = (dst: Uint8Array) => {
        dst.set(payload);
        return header.scale;
      };
      this.shmSend(slot, header, payload.byteLength, copy, done);
      return true;
    }
    if (payload.byteLength < SMALL_PAYLOAD) {
      super.sendData(header, payload, done);
      return true;
    }
    // Header and payload are consecutive socket messages (the payload is raw): never the mailbox.
    this.cork();
    this.sendWs(encodeDataHeader(header, payload.byteLength, KIND_DATA_HEADER));
    this.sendWs(payload, done);
    return true;
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
