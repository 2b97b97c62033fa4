import { RingProtocolError } from '../errors.js';
import type { LinkControlMessage } from './messages.js';
import { decodeMessage, encodeControl, encodeDataHeader, type DataHeader } from './wire.js';

/** What a link tells its owner. Set once with Link.setHandlers before traffic flows. */
export interface LinkHandlers {
  /** A data frame. `payload` may be retained (it is not reused by the transport). */
  data(header: DataHeader, payload: Uint8Array): void;
  control(msg: LinkControlMessage): void;
  /** The link is gone: `error` says why (undefined when this side closed it). Called once. */
  closed(error: Error | undefined): void;
}

/**
 * One authenticated, ordered, bidirectional message channel to a peer rank.
 * Implementations: WsLink (WebSocket) and MemoryLink (in-process, for tests).
 */
export interface Link {
  readonly peer: number;
  setHandlers(h: LinkHandlers): void;
  /** Queues a data frame; `done` runs once the bytes have left this process (or with the error). */
  sendData(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): void;
  sendControl(msg: LinkControlMessage, done?: (err?: Error) => void): void;
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
  private handlers: LinkHandlers | undefined;
  private early: Array<Uint8Array> = [];
  /** Set after a KIND_DATA_HEADER message: the next message is its payload. */
  private awaiting: { header: DataHeader; length: number } | undefined;
  protected isClosed = false;

  constructor(readonly peer: number, protected readonly describe: string) {}

  protected abstract write(parts: Uint8Array[], done: (err?: Error) => void): void;
  protected abstract closeTransport(): void;
  abstract ref(): void;
  abstract unref(): void;

  setHandlers(h: LinkHandlers): void {
    this.handlers = h;
    const early = this.early;
    this.early = [];
    for (const m of early) this.receive(m);
  }

  sendData(header: DataHeader, payload: Uint8Array, done: (err?: Error) => void): void {
    this.write([encodeDataHeader(header, payload.byteLength), payload], done);
  }

  sendControl(msg: LinkControlMessage, done: (err?: Error) => void = () => {}): void {
    this.write([encodeControl(msg)], done);
  }

  /** Called by the subclass for every whole message received. */
  protected receive(buf: Uint8Array): void {
    if (this.isClosed) return;
    const h = this.handlers;
    if (!h) {
      this.early.push(buf);
      return;
    }
    const awaiting = this.awaiting;
    if (awaiting) {
      this.awaiting = undefined;
      if (buf.byteLength !== awaiting.length) {
        this.fail(new RingProtocolError(`payload from ${this.describe} has ${buf.byteLength} bytes, its header said ${awaiting.length}`));
        return;
      }
      h.data(awaiting.header, buf);
      return;
    }
    let decoded;
    try {
      decoded = decodeMessage(buf, this.describe);
      if (decoded.kind === 'control') validateControl(decoded.msg, this.describe);
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    if (decoded.kind === 'data') h.data(decoded.header, decoded.payload);
    else if (decoded.kind === 'header') this.awaiting = decoded;
    else h.control(decoded.msg as unknown as LinkControlMessage);
  }

  /** Called by the subclass when the transport ends; `error` undefined means a clean close. */
  protected ended(error: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.handlers?.closed(error);
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
    this.handlers?.closed(undefined);
  }
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);

/** Shape checks for control messages received on a ring link: a malformed one is a protocol error. */
function validateControl(m: Record<string, unknown>, from: string): void {
  const bad = (what: string) => new RingProtocolError(`malformed '${String(m.t)}' message from ${from}: ${what}`);
  switch (m.t) {
    case 'desc': {
      const d = m.d as Record<string, unknown> | undefined;
      if (!isInt(m.seq) || !isInt(m.origin)) throw bad('seq/origin');
      if (!d || typeof d !== 'object') throw bad('descriptor');
      if (typeof d.kind !== 'string' || typeof d.op !== 'string' || typeof d.name !== 'string') throw bad('descriptor fields');
      if (!isInt(d.dtype) || !isInt(d.count) || !isInt(d.root) || typeof d.compression !== 'string') throw bad('descriptor fields');
      return;
    }
    case 'abort': {
      const e = m.error as Record<string, unknown> | undefined;
      if (!isInt(m.origin) || !e || typeof e.code !== 'string' || typeof e.message !== 'string') throw bad('error');
      return;
    }
    case 'bye':
      if (!isInt(m.rank)) throw bad('rank');
      return;
    case 'beat':
      if (!isInt(m.rank) || !isInt(m.everyMs) || (m.everyMs as number) < 1) throw bad('rank/everyMs');
      return;
    default:
      throw new RingProtocolError(`unexpected control message '${String(m.t)}' from ${from}`);
  }
}
