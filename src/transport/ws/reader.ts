import { isUtf8 } from 'node:buffer';
import { RingProtocolError } from '../../errors.js';
import {
  headerSize,
  MAX_HEADER_BYTES,
  OP_BINARY,
  OP_CLOSE,
  OP_CONTINUATION,
  OP_PING,
  OP_TEXT,
  parseHeader,
  type FrameHeader,
  type HeaderRules,
} from './frame.js';

/**
 * A streaming reader of RFC 6455 frames, fed the socket's chunks as they come (see takeover.ts
 * for how a link's socket is handed to it). It exists so that a payload's bytes are copied once:
 * ws's Receiver keeps every chunk and, once a message spanning several is complete, copies them
 * into a new buffer, which the link's owner then copies again to where the bytes belong.
 *
 * Here a frame's payload goes, as each chunk arrives (while it is still in the CPU's cache):
 *   - into its landing place, when the owner named one of the right length (see land());
 *   - nowhere, when it lies whole in one chunk: the message is a view of that chunk;
 *   - else into one allocation of its length, made when its header is read.
 * A fragmented message (ringreduce never sends one; a stock client may) is assembled into its
 * landing place or one buffer that doubles as fragments arrive. Nothing is held beyond the frame
 * being read: at most 14 header bytes, and the payload in its destination; a length over the
 * budget (maxPayload, for a whole message) is refused from the header, before any of its bytes.
 */
export interface FrameEvents {
  /**
   * A whole binary message: a view (of a socket chunk, of the landing place, or of its own
   * allocation) that stays valid, as ws's messages did: copy nothing to keep it.
   */
  message(data: Buffer): void;
  ping(data: Buffer): void;
  /** The peer's close frame: its code (1005 when it gave none) and reason. Nothing is read after it. */
  close(code: number, reason: Buffer): void;
  /** The peer broke the protocol; `status` is the close code to answer with. Nothing is read after it. */
  error(e: RingProtocolError, status: number): void;
}

export interface ReaderOptions extends HeaderRules {
  /** The peer, as errors name it (the link's description). */
  peer: string;
}

export class FrameReader {
  /** A header split across chunks, gathered here. */
  private readonly head = Buffer.allocUnsafe(MAX_HEADER_BYTES);
  private headBytes = 0;
  /** The frame whose payload is being read, where it goes, and how much of it is still to come. */
  private frame: FrameHeader | undefined;
  private dst: Uint8Array | undefined;
  private frameStart = 0;
  private dstAt = 0;
  private left = 0;
  /** A fragmented message being assembled: its buffer and the bytes in it so far. */
  private assembling: { buf: Uint8Array; length: number } | undefined;
  private place: Uint8Array | undefined;
  private stopped = false;

  constructor(
    private readonly o: ReaderOptions,
    private readonly on: FrameEvents,
  ) {}

  /**
   * Where the next binary message's bytes go, if it is exactly as long (LinkHandlers.land): the
   * message is then a view of this very place. Taken by the next message whether it fits or not.
   */
  land(place: Uint8Array | undefined): void {
    this.place = place;
  }

  /** True once a close frame or a violation ended the reading. */
  get done(): boolean {
    return this.stopped;
  }

  push(chunk: Buffer): void {
    let at = 0;
    const end = chunk.length;
    while (at < end && !this.stopped) at = this.frame ? this.payload(chunk, at, end) : this.header(chunk, at, end);
  }

  private header(chunk: Buffer, at: number, end: number): number {
    let h: ReturnType<typeof parseHeader>;
    if (this.headBytes === 0) {
      h = parseHeader(chunk, at, end, this.o);
      if (typeof h === 'number') {
        // Fewer bytes than the header needs (fewer than 14): kept until the next chunk.
        chunk.copy(this.head, 0, at, end);
        this.headBytes = end - at;
        return end;
      }
      if (!('violation' in h)) at += h.size;
    } else {
      // First the 2 bytes that tell the header's size, then the rest of it.
      const want = this.headBytes < 2 ? 2 : headerSize(this.head[1]);
      const take = Math.min(want - this.headBytes, end - at);
      chunk.copy(this.head, this.headBytes, at, at + take);
      this.headBytes += take;
      at += take;
      h = parseHeader(this.head, 0, this.headBytes, this.o);
      if (typeof h === 'number') return at;
      this.headBytes = 0;
    }
    if ('violation' in h) return this.fail(`${this.o.peer} broke the WebSocket protocol: ${h.violation}`, h.status);
    return this.begin(h, chunk, at, end);
  }

  /** A frame's header is read: decide where its payload goes, and take what of it this chunk holds. */
  private begin(h: FrameHeader, chunk: Buffer, at: number, end: number): number {
    const { opcode, length } = h;
    if (opcode >= OP_CLOSE) {
      // Control frames (at most 125 bytes) may come between the fragments of a message.
      if (end - at >= length) {
        const data = chunk.subarray(at, at + length);
        unmask(data, 0, length, h.mask);
        this.control(h, data);
        return at + length;
      }
      return this.expect(h, Buffer.allocUnsafe(length), 0, chunk, at, end);
    }
    if (opcode === OP_TEXT) return this.fail(`text frame from ${this.o.peer}`, 1003);
    const msg = this.assembling;
    if (opcode === OP_CONTINUATION && !msg) return this.fail(`${this.o.peer} broke the WebSocket protocol: continuation frame with no message begun`, 1002);
    if (opcode === OP_BINARY && msg) return this.fail(`${this.o.peer} broke the WebSocket protocol: new message inside a fragmented one`, 1002);
    let place: Uint8Array | undefined;
    if (opcode === OP_BINARY) {
      place = this.place;
      this.place = undefined;
    }
    if (h.fin && !msg) {
      // A whole message in one frame: all that ringreduce sends.
      if (place && place.byteLength === length) return this.expect(h, place, 0, chunk, at, end);
      if (end - at >= length) {
        const data = chunk.subarray(at, at + length);
        unmask(data, 0, length, h.mask);
        this.on.message(data);
        return at + length;
      }
      return this.expect(h, Buffer.allocUnsafe(length), 0, chunk, at, end);
    }
    const m = msg ?? (this.assembling = { buf: place ?? Buffer.allocUnsafe(length), length: 0 });
    const total = m.length + length;
    if (total > this.o.maxPayload) {
      return this.fail(`${this.o.peer} broke the WebSocket protocol: fragmented message of over ${this.o.maxPayload} bytes, the limit`, 1009);
    }
    if (total > m.buf.byteLength) {
      const grown = Buffer.allocUnsafe(Math.min(this.o.maxPayload, Math.max(total, 2 * m.buf.byteLength)));
      grown.set(m.buf.subarray(0, m.length));
      m.buf = grown;
    }
    const from = m.length;
    m.length = total;
    return this.expect(h, m.buf, from, chunk, at, end);
  }

  /** The payload of `h` goes to `dst` from `from` on: takes what this chunk holds of it. */
  private expect(h: FrameHeader, dst: Uint8Array, from: number, chunk: Buffer, at: number, end: number): number {
    this.frame = h;
    this.dst = dst;
    this.frameStart = this.dstAt = from;
    this.left = h.length;
    return h.length === 0 ? (this.ended(), at) : this.payload(chunk, at, end);
  }

  private payload(chunk: Buffer, at: number, end: number): number {
    const take = Math.min(this.left, end - at);
    this.dst!.set(take === chunk.length ? chunk : chunk.subarray(at, at + take), this.dstAt);
    this.dstAt += take;
    this.left -= take;
    if (this.left === 0) this.ended();
    return at + take;
  }

  /** The current frame's payload is all in place. */
  private ended(): void {
    const h = this.frame!;
    const dst = this.dst!;
    this.frame = this.dst = undefined;
    unmask(dst, this.frameStart, this.frameStart + h.length, h.mask);
    if (h.opcode >= OP_CLOSE) return this.control(h, asBuffer(dst, this.frameStart, h.length));
    if (!h.fin) return;
    const m = this.assembling;
    this.assembling = undefined;
    this.on.message(m ? asBuffer(m.buf, 0, m.length) : asBuffer(dst, 0, h.length));
  }

  private control(h: FrameHeader, data: Buffer): void {
    if (h.opcode === OP_PING) return this.on.ping(data);
    if (h.opcode !== OP_CLOSE) return; // a pong: nothing asked for it
    const code = data.length === 0 ? 1005 : data.readUInt16BE(0);
    if (data.length > 0 && !isValidCloseCode(code)) {
      this.fail(`${this.o.peer} broke the WebSocket protocol: close code ${code}`, 1002);
      return;
    }
    const reason = data.subarray(Math.min(2, data.length));
    if (!isUtf8(reason)) {
      this.fail(`${this.o.peer} broke the WebSocket protocol: close reason is not UTF-8`, 1007);
      return;
    }
    this.stopped = true;
    this.on.close(code, reason);
  }

  /** Stops reading for good (push reads nothing after a violation) and reports why. */
  private fail(message: string, status: number): number {
    this.stopped = true;
    this.frame = this.dst = this.assembling = this.place = undefined;
    this.on.error(new RingProtocolError(message), status);
    return 0; // a position for the caller to return: push stops anyway
  }
}

/** Close codes a peer may send (RFC 6455 7.4; as ws's isValidStatusCode). */
const isValidCloseCode = (c: number) => (c >= 1000 && c <= 1014 && c !== 1004 && c !== 1005 && c !== 1006) || (c >= 3000 && c <= 4999);

const asBuffer = (b: Uint8Array, at: number, n: number): Buffer => Buffer.from(b.buffer, b.byteOffset + at, n);

/**
 * Undoes a client's masking of `b[from..to)` in place. ringreduce's clients mask with zeros (see
 * socket.ts zeroMask), so the pass is skipped for them; a stock client's frames take it.
 */
function unmask(b: Uint8Array, from: number, to: number, mask: Uint8Array | undefined): void {
  if (!mask || (mask[0] | mask[1] | mask[2] | mask[3]) === 0) return;
  for (let i = from, k = 0; i < to; i++, k = (k + 1) & 3) b[i] ^= mask[k];
}
