import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { WebSocket } from 'ws';
import type { RingProtocolError } from '../../errors.js';
import { FrameReader } from './reader.js';

/**
 * Hands an established link's socket from ws's Receiver to a FrameReader (reader.ts), so that
 * payloads land once. ws keeps everything else: its Sender writes our frames, its close and error
 * handling end the connection, and pause()/resume() stop and start reading the socket.
 *
 * The switch happens where ws's Receiver is between two messages: its unparsed bytes (the start
 * of what the peer sent next) are taken over with it, so nothing is lost or read twice. A link
 * is made right after its handshake, when ws may be in the middle of a frame the peer sent at
 * once; then ws reads that message and the switch follows it.
 *
 * This reaches into ws 8 (the WebSocket's `_socket`, `_receiver`, `_isServer` and close state;
 * the Receiver's `_state`, `_fragmented`, `_buffers`, `_maxPayload`; the socket's one 'data'
 * listener, `socketOnData`). Where any of it is not as expected, the socket stays with ws, and
 * payloads take its path (one more copy).
 */
interface WsInternals {
  _socket?: Socket;
  _receiver?: ReceiverInternals;
  _isServer?: boolean;
  _closeFrameReceived: boolean;
  _closeCode: number;
  _closeMessage: Buffer;
}

interface ReceiverInternals extends Writable {
  _state?: number;
  _fragmented?: number;
  _buffers?: Buffer[];
  _bufferedBytes?: number;
  _maxPayload?: number;
  _allowSynchronousEvents?: boolean;
  _extensions?: object;
  _errored?: boolean;
  _writableState: { bufferedRequestCount?: number };
}

/** The Receiver's state between frames (ws's GET_INFO). */
const GET_INFO = 0;

/** A link socket's reader: ws's until the switch, a FrameReader's after it. */
export class LinkReader {
  private reader: FrameReader | undefined;
  private readonly onData = (chunk: Buffer) => this.reader!.push(chunk);
  private readonly onWsMessage = () => this.switchOver(false);
  /** What the socket still holds when it closes (read while the link was paused) is read here, not by ws. */
  private readonly onClose = () => {
    const s = this.socket;
    if (this.reader && !this.reader.done && s.readableLength > 0) {
      const rest = s.read(s.readableLength) as Buffer | null;
      if (rest) this.reader.push(rest);
    }
  };

  private constructor(
    private readonly ws: WebSocket,
    private readonly socket: Socket,
    private readonly receiver: ReceiverInternals,
    private readonly peer: string,
    private readonly message: (data: Buffer) => void,
  ) {}

  /** A reader for `ws`'s socket, or undefined when this ws or socket is not one it can take over. */
  static for(ws: WebSocket, peer: string, message: (data: Buffer) => void): LinkReader | undefined {
    const w = ws as unknown as WsInternals;
    const r = w._receiver;
    const s = w._socket;
    if (!r || !s || typeof s.on !== 'function' || typeof w._isServer !== 'boolean') return undefined;
    if (typeof r._state !== 'number' || typeof r._fragmented !== 'number' || !Array.isArray(r._buffers)) return undefined;
    // Extensions (permessage-deflate) would need RSV1 and inflating; deferred events, writes
    // queued behind them. Links use neither.
    if (r._allowSynchronousEvents !== true || Object.keys(r._extensions ?? {}).length > 0) return undefined;
    if (typeof r._maxPayload !== 'number' || r._maxPayload <= 0) return undefined;
    return new LinkReader(ws, s, r, peer, message);
  }

  /** True once frames are read here rather than by ws. */
  get active(): boolean {
    return this.reader !== undefined;
  }

  /**
   * See FrameReader.land. Before the switch it is kept for the reader: the header may be ws's
   * last message and its payload the reader's first (if ws reads the payload, the link's next
   * call clears it).
   */
  land(place: Uint8Array | undefined): void {
    if (this.reader) this.reader.land(place);
    else this.place = place;
  }
  private place: Uint8Array | undefined;

  /** Switches now if ws is between messages, else after the message it is reading. */
  start(): void {
    if (!this.switchOver(true)) this.ws.on('message', this.onWsMessage);
  }

  /**
   * Takes the socket over from ws, when it is between messages: now (`idle`, outside its parse
   * loop: its state says so) or in its 'message' event, after the link's own listener has had
   * the message (ws has reset its message state; the rest of the chunk is in `_buffers`, and
   * with none there its loop stops at the next header).
   */
  private switchOver(idle: boolean): boolean {
    const r = this.receiver;
    const s = this.socket;
    if (this.reader || this.ws.readyState !== this.ws.OPEN || r._errored || r._fragmented !== 0) return false;
    if (idle && (r._state !== GET_INFO || r.writableLength > 0)) return false;
    if ((r._writableState.bufferedRequestCount ?? 0) > 0) return false;
    const listeners = s.listeners('data');
    if (listeners.length !== 1 || listeners[0].name !== 'socketOnData') return this.giveUp();
    const held = r._buffers!;
    r._buffers = [];
    r._bufferedBytes = 0;
    s.removeListener('data', listeners[0] as (chunk: Buffer) => void);
    this.ws.off('message', this.onWsMessage);
    this.reader = new FrameReader(
      { maxPayload: r._maxPayload!, masked: (this.ws as unknown as WsInternals)._isServer!, peer: this.peer },
      {
        message: this.message,
        ping: (data) => {
          if (this.ws.readyState === this.ws.OPEN) this.ws.pong(data);
        },
        close: (code, reason) => this.closed(code, reason),
        error: (e, status) => this.failed(e, status),
      },
    );
    this.reader.land(this.place);
    this.place = undefined;
    // A paused socket stays paused: adding a 'data' listener resumes only one never paused.
    s.on('data', this.onData);
    // Before ws's own 'close' listener, which would feed what is left to its Receiver.
    s.prependListener('close', this.onClose);
    for (const b of held) this.reader.push(b);
    return true;
  }

  private giveUp(): false {
    this.ws.off('message', this.onWsMessage);
    return false;
  }

  /** Stops reading; the socket is read on to its end (and what comes is dropped), as ws does. */
  private stop(): void {
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('close', this.onClose);
    process.nextTick(() => this.socket.resume());
  }

  /** The peer's close frame: what ws's Receiver would report ('conclude'), so that ws ends the closing handshake. */
  private closed(code: number, reason: Buffer): void {
    this.stop();
    const w = this.ws as unknown as WsInternals;
    w._closeFrameReceived = true;
    w._closeCode = code;
    w._closeMessage = Buffer.from(reason);
    if (code === 1005) this.ws.close();
    else this.ws.close(code, reason);
  }

  /**
   * A violation: answer with a close frame of `status`, and fail ws's Receiver with the error so
   * that ws takes its own path for one (it ends the socket once its close frame is out, without
   * waiting for the peer's, and emits 'error' with `e`, then 'close').
   */
  private failed(e: RingProtocolError, status: number): void {
    this.stop();
    this.ws.close(status);
    this.receiver.destroy(e);
  }
}
