import { RingPeerLostError, RingProtocolError } from '../../errors.js';
import { DATA_HEADER_BYTES, decodeMessage, KIND_DATA_HEADER, type DataHeader } from '../wire.js';
import type { Mailbox } from './mailbox.js';
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
  type ShmRegion,
} from './region.js';

/** A frame's payload: its bytes, or (see LinkRegion.sendFilled) how to write them into a slot. */
type Payload = Uint8Array | { bytes: number; fill: (dst: Uint8Array) => number };

/** From this many payload bytes a frame goes through shared memory, when the link has it. */
const SHM_MIN_BYTES = 16 * 1024;

/** What a link's region needs of the link (ws/link.ts). */
export interface RegionHost {
  readonly peer: number;
  readonly describe: string;
  /** The link has ended. */
  closed(): boolean;
  /** One message on the socket itself: the set-up's offer and reply, which come before any mailbox. */
  sendSocket(m: Uint8Array): void;
  /** One message through the peer's mailbox while it polls, else the socket. */
  post(parts: Uint8Array[], done?: (err?: Error) => void): void;
  /** A frame the way the link sends what goes through no slot. */
  sendFrame(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): void;
  /** A data frame that arrived in a slot, to the link's owner (MessageLink.deliverData). */
  deliver(header: DataHeader, payload: Uint8Array, pin: () => () => void): void;
  /** The region is mapped on both sides: its mailboxes carry the link's messages from now on. */
  mailboxes(boxes: { out: Mailbox; in: Mailbox }): void;
}

/**
 * The shared-memory half of a WebSocket link (see region.ts): the set-up (an offer from the side
 * that sends data, a reply from the other), the frames that travel in the region's slots, and the
 * slots handed back. The link keeps the message path (the socket, the mailboxes and their order);
 * every frame goes through send(), so that frames leave in order, slot or not.
 */
export class LinkRegion {
  /** This side sends data through the peer-mapped region: free slots, and frames waiting for one. */
  private tx: { region: ShmRegion; free: number[]; waiting: Array<[DataHeader, Payload, (err?: Error) => void]> } | undefined;
  /** The peer sends data through this region (each slot is handed back as soon as it is read). */
  private rx: { region: ShmRegion } | undefined;
  private offerWaiter: ((m: Uint8Array | undefined) => void) | undefined;
  private replyWaiter: ((m: Uint8Array | undefined) => void) | undefined;
  private pendingOffer: Uint8Array | undefined;
  private pendingReply: Uint8Array | undefined;
  private offered = false;

  constructor(private readonly link: RegionHost) {}

  /** True once payloads on this link (to or from the peer) go through shared memory. */
  get active(): boolean {
    return this.tx !== undefined || this.rx !== undefined;
  }

  /** See Link.offerSharedMemory. */
  async offer(enabled: boolean, slots: number, payloadBytes: number, timeoutMs: number): Promise<string | undefined> {
    const link = this.link;
    if (this.pendingOffer) throw new RingProtocolError(`${link.describe} offered shared memory on a link where it receives`);
    this.offered = true;
    const why = enabled ? shmAvailable() : 'shared memory is disabled on this rank';
    if (why !== undefined) {
      link.sendSocket(noOffer());
      return why;
    }
    const made = createRegion(slots, payloadBytes);
    if (typeof made === 'string') {
      // No room for the region (a small /dev/shm): payloads on this link go through the socket.
      link.sendSocket(noOffer());
      return made;
    }
    const { region, offer, path } = made;
    try {
      link.sendSocket(offer);
      const m = await this.await('reply', timeoutMs);
      const reply = decodeReply(m, link.describe);
      if (!reply.ok) return reply.reason;
      this.tx = { region, free: Array.from({ length: slots }, (_, i) => slots - 1 - i), waiting: [] };
      link.mailboxes(mailboxes(region, true, link.describe));
      return undefined;
    } finally {
      unlinkQuietly(path);
    }
  }

  /** See Link.acceptSharedMemory: waits for the peer's offer and maps its region if it is on this host. */
  async accept(enabled: boolean, maxPayload: number, timeoutMs: number): Promise<string | undefined> {
    const link = this.link;
    const m = await this.await('offer', timeoutMs);
    const r = acceptOffer(m, maxPayload, enabled, link.describe);
    if (r === NO_OFFER) return r;
    if (typeof r === 'string') {
      link.sendSocket(encodeReply(false, r));
      return r;
    }
    this.rx = { region: r };
    link.mailboxes(mailboxes(r, false, link.describe));
    link.sendSocket(encodeReply(true, ''));
    return undefined;
  }

  private await(what: 'offer' | 'reply', timeoutMs: number): Promise<Uint8Array> {
    const link = this.link;
    return new Promise<Uint8Array>((resolve, reject) => {
      const early = what === 'offer' ? this.pendingOffer : this.pendingReply;
      if (early) return resolve(early);
      // The peer hung up: that is a lost peer, like a close at any later moment.
      const lost = () => new RingPeerLostError(`connection to ${link.describe} closed during shared-memory set-up`, { ranks: [link.peer] });
      if (link.closed()) return reject(lost());
      const timer = setTimeout(() => reject(new RingProtocolError(`${link.describe} sent no shared-memory ${what} within ${timeoutMs} ms`)), timeoutMs);
      const settle = (m: Uint8Array | undefined) => {
        clearTimeout(timer);
        if (m) resolve(m);
        else reject(lost());
      };
      if (what === 'offer') this.offerWaiter = settle;
      else this.replyWaiter = settle;
    });
  }

  /** A message of a shared-memory kind (region.ts) from the peer; throws RingProtocolError. */
  message(buf: Uint8Array): void {
    switch (buf[0]) {
      case KIND_SHM_OFFER:
      case KIND_SHM_REPLY: {
        const offer = buf[0] === KIND_SHM_OFFER;
        // One offer per link, to the side that does not offer; a reply only to an offer.
        if (offer ? this.pendingOffer || this.offered : !this.replyWaiter) {
          throw new RingProtocolError(`unexpected shared-memory ${offer ? 'offer' : 'reply'} from ${this.link.describe}`);
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
        return this.data(buf);
      case KIND_SHM_FREE:
        return this.free(slotOf(buf, this.link.describe));
      case KIND_SHM_WAKE:
        return; // the mailbox was drained around it
    }
  }

  private data(buf: Uint8Array): void {
    const link = this.link;
    const rx = this.rx;
    if (!rx) throw new RingProtocolError(`shared-memory data from ${link.describe}, which has no region here`);
    const slot = slotOf(buf, link.describe);
    const head = new Uint8Array(buf.subarray(0, DATA_HEADER_BYTES));
    head[0] = KIND_DATA_HEADER;
    const d = decodeMessage(head, link.describe);
    if (d.kind !== 'header') throw new RingProtocolError(`bad shared-memory data notice from ${link.describe}`);
    const length = d.length;
    if (slot >= rx.region.slots || length > rx.region.slotBytes) {
      throw new RingProtocolError(`shared-memory notice from ${link.describe} is out of its region (slot ${slot}, ${length} bytes)`);
    }
    let pinned = false;
    const pin = () => {
      pinned = true;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        if (!link.closed()) link.post([encodeFree(slot)]);
      };
    };
    link.deliver(d.header, slotView(rx.region, slot, length), pin);
    // Unless the handler kept the slot, it is done with it (it copied what it keeps): hand it back.
    if (pinned || link.closed()) return;
    link.post([encodeFree(slot)]);
  }

  private free(slot: number): void {
    const tx = this.tx;
    if (!tx || slot >= tx.region.slots || tx.free.includes(slot)) {
      throw new RingProtocolError(`${this.link.describe} handed back shared-memory slot ${slot}, which it did not hold`);
    }
    tx.free.push(slot);
    // Frames that waited for a slot go first, in order (small ones among them take none).
    while (tx.waiting.length > 0 && this.sendNow(...tx.waiting[0])) tx.waiting.shift();
  }

  /**
   * A frame written straight into a shared slot: now if one is free and nothing waits, else when
   * one frees (in order with the other waiting frames). Before, a frame without a free slot was
   * made in a buffer and copied into the slot later: an extra pass over every such frame. False
   * (nothing done) when the link has no region for such a frame.
   */
  sendFilled(header: DataHeader, bytes: number, fill: (dst: Uint8Array) => number, done: (err?: Error) => void): boolean {
    const tx = this.tx;
    if (!tx || bytes < SHM_MIN_BYTES || bytes > tx.region.slotBytes) return false;
    if (tx.waiting.length === 0 && tx.free.length > 0) this.slotSend(tx.free.pop()!, header, bytes, fill, done);
    else tx.waiting.push([header, { bytes, fill }, done]);
    return true;
  }

  /**
   * A frame, when this side sends through a region: now, or once the frames waiting for a slot
   * before it have gone (frames leave in order: while one waits for a shared slot, every later
   * frame waits behind it). False (nothing done) when it has no region: the link sends it itself.
   */
  send(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): boolean {
    const tx = this.tx;
    if (!tx) return false;
    if (tx.waiting.length > 0 || !this.sendNow(header, payload, done)) tx.waiting.push([header, payload, done]);
    return true;
  }

  /**
   * Sends a frame now: payloads of SHM_MIN_BYTES and more that fit a slot through one, the others
   * the link's way. False (nothing sent) when it needs a slot and none is free.
   */
  private sendNow(header: DataHeader, payload: Payload, done: (err?: Error) => void): boolean {
    const tx = this.tx!;
    if (!(payload instanceof Uint8Array)) {
      // A frame made when it leaves (sendFilled): always for a slot.
      const slot = tx.free.pop();
      if (slot === undefined) return false;
      this.slotSend(slot, header, payload.bytes, payload.fill, done);
      return true;
    }
    if (payload.byteLength >= SHM_MIN_BYTES && payload.byteLength <= tx.region.slotBytes) {
      const slot = tx.free.pop();
      if (slot === undefined) return false;
      const copy = (dst: Uint8Array) => {
        dst.set(payload);
        return header.scale;
      };
      this.slotSend(slot, header, payload.byteLength, copy, done);
      return true;
    }
    this.link.sendFrame(header, payload, done);
    return true;
  }

  /** Writes a frame's payload into `slot` with `fill` (which returns its scale) and sends the notice. */
  private slotSend(slot: number, header: DataHeader, bytes: number, fill: (dst: Uint8Array) => number, done: (err?: Error) => void): void {
    const scale = fill(slotView(this.tx!.region, slot, bytes));
    this.link.post([encodeShmData({ ...header, scale }, bytes, slot)], done);
  }

  /**
   * The link has ended: a set-up waiting for the peer fails (a lost peer), and the callbacks of the
   * frames that waited for a slot are returned, for the link to fail once its owner has heard.
   */
  end(): Array<(err?: Error) => void> {
    const waiting = this.tx?.waiting.splice(0) ?? [];
    for (const w of [this.offerWaiter, this.replyWaiter]) w?.(undefined);
    this.offerWaiter = this.replyWaiter = undefined;
    return waiting.map(([, , done]) => done);
  }
}
