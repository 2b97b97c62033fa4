import { isRingErrorCode, RingProtocolError, type RingErrorDetails } from '../errors.js';
import { peerText, peerValue } from '../peer-text.js';
import type { LinkControlMessage } from './messages.js';
import { decodeMessage, encodeControl, encodeData, encodeDataHeader, KIND_DATA_HEADER, MAX_CONTROL_BYTES, type DataHeader } from './wire.js';
import { FIRST_LINK_KIND, LAST_LINK_KIND } from './shm/region.js';

/** What a link tells its owner. Set once with Link.setHandlers before traffic flows. */
export interface LinkHandlers<M = LinkControlMessage> {
  /**
   * A data frame. `payload` is valid only until this returns (a shared-memory slot is handed back
   * right after): copy what must be kept — or, where the transport offers `pin` (a frame in a
   * shared-memory slot), call it to keep the slot, payload and all, until the returned function
   * is called. A pinned slot is one the sender cannot use: pin only what will be released soon.
   */
  data(header: DataHeader, payload: Uint8Array, pin?: () => () => void): void;
  control(msg: M): void;
  /**
   * Checks the shape of a received control message and returns a clean copy (throws
   * RingProtocolError). Default: the ring's messages (validateControl). Owners that speak another
   * protocol on the link (point-to-point) bring their own.
   */
  validate?(m: Record<string, unknown>, from: string): M;
  /**
   * A data frame's header arrived and its `length`-byte payload comes next: where it belongs, if
   * the owner knows (the payload is then written there by transports that can: see ws/reader.ts,
   * and `data` gets a view of that very place). Optional.
   */
  land?(header: DataHeader, length: number): Uint8Array | undefined;
  /**
   * The link is gone: `error` says why (undefined when this side closed it). Called once — also
   * for a link that ended before these handlers were set (then in a microtask after setHandlers).
   */
  closed(error: Error | undefined): void;
}

/**
 * One authenticated, ordered, bidirectional message channel to a peer rank.
 * Implementations: WsLink (WebSocket) and MemoryLink (in-process, for tests).
 */
export interface Link {
  readonly peer: number;
  /** True when the peer shares this host and the link's payloads go through shared memory. */
  readonly sharedMemory?: boolean;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each owner brings its message type (see validate)
  setHandlers(h: LinkHandlers<any>): void;
  /** Queues a data frame; `done` runs once the bytes have left this process (or with the error). */
  sendData(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): void;
  /**
   * Writes a `bytes`-long payload straight into the transport's own buffer (a shared-memory slot),
   * now or once one is free: calls `fill` on it then (fill returns the header's scale), sends, and
   * returns true. Returns false, having done nothing, when the transport has no such buffers for
   * this frame. Optional.
   */
  sendFilled?(header: DataHeader, bytes: number, fill: (dst: Uint8Array) => number, done: (err?: Error) => void): boolean;
  sendControl(msg: object, done?: (err?: Error) => void): void;
  /**
   * Shared memory for this link's payloads, when the peer shares this host (WebSocket links; see
   * shm/region.ts). The sending side offers, the receiving side answers; each resolves to
   * undefined when shared memory is in use, else to the reason it is not. Optional: other links
   * have none.
   */
  offerSharedMemory?(enabled: boolean, slots: number, payloadBytes: number, timeoutMs: number): Promise<string | undefined>;
  acceptSharedMemory?(enabled: boolean, maxPayload: number, timeoutMs: number): Promise<string | undefined>;
  /**
   * The owner is polling (messages may arrive by a way that needs no wake-up, as a shared-memory
   * mailbox) or stops; poll() handles what so arrived. Optional: socket-only links have nothing to do.
   */
  setPolling?(on: boolean): void;
  poll?(): void;
  /**
   * Stops reading the peer's messages (on: backpressure — the peer's writes wait, as on a full
   * socket) or resumes. A few messages already read may still arrive while paused. Optional: links
   * without it keep reading.
   */
  pause?(on: boolean): void;
  /** Keep the process alive while the link is open (an operation is pending) — or not. */
  ref(): void;
  unref(): void;
  close(): void;
}

/**
 * The part of a link that is the same for every transport: decoding, control-message checks,
 * handler dispatch, closing once. Subclasses move bytes.
 */
export abstract class MessageLink implements Link {
  private handlers: LinkHandlers<unknown> | undefined;
  private early: Array<Uint8Array> = [];
  /** Set after a KIND_DATA_HEADER message: the next message is its payload. */
  private awaiting: { header: DataHeader; length: number } | undefined;
  protected isClosed = false;
  /** How the link ended while it had no handlers yet: delivered by setHandlers. */
  private endedEarly: { error: Error | undefined } | undefined;

  constructor(readonly peer: number, protected readonly describe: string) {}

  protected abstract write(parts: Uint8Array[], done: (err?: Error) => void): void;
  protected abstract closeTransport(): void;
  abstract ref(): void;
  abstract unref(): void;

  setHandlers<M>(h: LinkHandlers<M>): void {
    this.handlers = h as LinkHandlers<unknown>;
    const early = this.early;
    this.early = [];
    for (const m of early) this.dispatch(m);
    // A link that ended before anyone listened (the peer hung up during ring formation, right
    // after its shared-memory offer): its owner must still hear of it, or it waits for that peer
    // forever. Told once the owner's constructor (which sets handlers) has returned.
    const gone = this.endedEarly;
    if (gone) {
      this.endedEarly = undefined;
      queueMicrotask(() => h.closed(gone.error));
    }
  }

  sendData(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): void {
    this.write([encodeDataHeader(header, payload.byteLength), payload], done);
  }

  sendControl(msg: object, done: (err?: Error) => void = () => {}): void {
    this.write([encodeControl(msg)], done);
  }

  /** Set after a KIND_DATA_HEADER message: the next message is raw payload, whatever its first byte. */
  private rawNext = false;

  /** Called by the subclass for every whole message received. */
  protected receive(buf: Uint8Array): void {
    if (this.isClosed) return;
    if (this.rawNext) this.rawNext = false;
    else if (buf.byteLength > 0 && buf[0] >= FIRST_LINK_KIND && buf[0] <= LAST_LINK_KIND) {
      // The transport's own messages (shared-memory set-up and notices): handled at once, even
      // before the owner has set handlers.
      this.linkMessage(buf);
      return;
    } else if (buf.byteLength > 0 && buf[0] === KIND_DATA_HEADER) this.rawNext = true;
    this.dispatch(buf);
  }

  /** A message of a link-level kind; links that use none treat it as a protocol error. */
  protected linkMessage(buf: Uint8Array): void {
    this.fail(new RingProtocolError(`unknown message kind ${buf[0]} from ${this.describe}`));
  }

  /** A data frame that arrived by other means than a message (e.g. through shared memory). */
  protected deliverData(header: DataHeader, payload: Uint8Array, pin?: () => () => void): void {
    if (this.isClosed) return;
    if (this.handlers) this.handlers.data(header, payload, pin);
    else this.early.push(encodeData(header, payload));
  }

  private dispatch(buf: Uint8Array): void {
    const h = this.handlers;
    if (!h) {
      this.early.push(buf);
      return;
    }
    const awaiting = this.awaiting;
    if (awaiting) {
      this.awaiting = undefined;
      this.payloadComing(undefined, 0);
      if (buf.byteLength !== awaiting.length) {
        this.fail(new RingProtocolError(`payload from ${this.describe} has ${buf.byteLength} bytes, its header said ${awaiting.length}`));
        return;
      }
      h.data(awaiting.header, buf);
      return;
    }
    let decoded;
    let control: unknown;
    try {
      decoded = decodeMessage(buf, this.describe, MAX_CONTROL_BYTES);
      if (decoded.kind === 'control') control = (h.validate ?? validateControl)(decoded.msg, this.describe);
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    if (decoded.kind === 'data') h.data(decoded.header, decoded.payload);
    else if (decoded.kind === 'header') {
      this.awaiting = decoded;
      this.payloadComing(h.land?.(decoded.header, decoded.length), decoded.length);
    }
    else h.control(control);
  }

  /** The next message is a payload whose place the owner named (or undefined): see LinkHandlers.land. */
  protected payloadComing(_place: Uint8Array | undefined, _length: number): void {}

  /** Called by the subclass when the transport ends; `error` undefined means a clean close. */
  protected ended(error: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.handlers) this.handlers.closed(error);
    else this.endedEarly = { error };
  }

  protected fail(error: Error): void {
    if (this.isClosed) return;
    this.ended(error);
    this.closeTransport();
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeTransport();
    if (this.handlers) this.handlers.closed(undefined);
    else this.endedEarly = { error: undefined };
  }
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isRecord = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);

/** The longest error message an abort carries on (a peer's text: see peer-text.ts). */
export const MAX_ABORT_MESSAGE = 2000;
/** Ranks an abort's details may name, and the length of their op and field names. */
const MAX_DETAIL_RANKS = 1 << 16;
const MAX_DETAIL_NAME = 64;
/** Heartbeat intervals a peer may announce, ms (see liveness.ts: 20 ms to 1 s; up to a minute tolerated). */
const MAX_BEAT_MS = 60_000;

/**
 * Shape checks for control messages received on a ring link: a malformed one is a protocol error
 * naming the field (and, safely, the value: peer-text.ts). Every field is checked for type and
 * range; an abort's message and names, which reach logs and errors, are made safe and bounded
 * here (so an abort forwarded round the ring carries the safe text). Returns a fresh message
 * holding only the known fields, so nothing else the peer put in the object travels further. A
 * descriptor is checked only for being a record: its fields are the collectives' vocabulary,
 * which the communicator validates (collectives/descriptor.ts).
 */
export function validateControl(m: Record<string, unknown>, from: string): LinkControlMessage {
  const bad = (what: string) => new RingProtocolError(`malformed ${peerValue(m.t)} message from ${from}: ${what}`);
  switch (m.t) {
    case 'desc': {
      const d = m.d;
      if (!isInt(m.seq) || m.seq < 0 || !isInt(m.origin) || m.origin < 0) throw bad(`seq ${peerValue(m.seq)} / origin ${peerValue(m.origin)}`);
      if (!isRecord(d)) throw bad(`descriptor ${peerValue(d)}`);
      if (m.p === undefined) return { t: 'desc', seq: m.seq, origin: m.origin, d };
      if (!(m.p instanceof Uint8Array)) throw bad(`inline payload ${peerValue(m.p)}`);
      return { t: 'desc', seq: m.seq, origin: m.origin, d, p: m.p };
    }
    case 'abort': {
      const e = m.error;
      if (!isInt(m.origin) || m.origin < 0) throw bad(`origin ${peerValue(m.origin)}`);
      if (!isRecord(e) || !isRingErrorCode(e.code) || typeof e.message !== 'string') throw bad('error');
      const x = e.details === undefined ? {} : e.details;
      if (!isRecord(x)) throw bad('error details');
      const details: RingErrorDetails = {};
      const name = (v: unknown, field: string) => (typeof v === 'string' ? peerText(v, MAX_DETAIL_NAME) : badDetail(field));
      if (x.rank !== undefined) details.rank = isInt(x.rank) && x.rank >= 0 ? x.rank : badDetail('rank');
      if (x.ranks !== undefined) {
        const ok = Array.isArray(x.ranks) && x.ranks.length <= MAX_DETAIL_RANKS && x.ranks.every((r) => isInt(r) && r >= 0);
        details.ranks = ok ? (x.ranks as number[]).slice() : badDetail('ranks');
      }
      if (x.op !== undefined) details.op = name(x.op, 'op');
      if (x.seq !== undefined) details.seq = isInt(x.seq) && x.seq >= 0 ? x.seq : badDetail('seq');
      if (x.field !== undefined) details.field = name(x.field, 'field');
      return { t: 'abort', origin: m.origin, error: { code: e.code, message: peerText(e.message, MAX_ABORT_MESSAGE), details } };
    }
    case 'bye':
      if (!isInt(m.rank) || m.rank < 0) throw bad(`rank ${peerValue(m.rank)}`);
      return { t: 'bye', rank: m.rank };
    case 'beat':
      if (!isInt(m.rank) || m.rank < 0 || !isInt(m.everyMs) || m.everyMs < 1 || m.everyMs > MAX_BEAT_MS) {
        throw bad(`rank ${peerValue(m.rank)} / everyMs ${peerValue(m.everyMs)}`);
      }
      return { t: 'beat', rank: m.rank, everyMs: m.everyMs };
    default:
      throw new RingProtocolError(`unexpected control message ${peerValue(m.t)} from ${from}`);
  }
  function badDetail(field: string): never {
    throw bad(`error details.${field}`);
  }
}
