import { Packr } from 'msgpackr';
import { RingProtocolError } from '../errors.js';
import { peerText } from '../peer-text.js';
import { checkMsgpack } from './msgpack-check.js';

/**
 * Wire format of one WebSocket binary message.
 *
 *   byte 0: kind — KIND_CONTROL (msgpack body follows) or KIND_DATA.
 *
 * A data frame has a fixed 24-byte little-endian header, then raw payload bytes:
 *
 *   0  u8   kind = 1          4  u32 seq     (collective sequence number)
 *   1  u8   codec (0 = raw)   8  u32 step    (ring hop)
 *   2  u16  reserved         12  u32 chunk   (chunk index within the hop's segment)
 *                            16  f32 scale   (for codecs that scale; 1 otherwise)
 *                            20  u32 length  (payload bytes; must equal what follows)
 *
 * 24 is a multiple of 8, so a payload is as aligned as the message that carries it.
 *
 * A transport may instead send the header alone with kind = KIND_DATA_HEADER and the payload as
 * the very next message (raw bytes, no header). The WebSocket link does: ws then writes the
 * caller's payload straight to the socket (writev) instead of first copying header + payload into
 * one buffer — one memcpy of every byte saved on the sending side.
 */
export const KIND_CONTROL = 0;
export const KIND_DATA = 1;
export const KIND_DATA_HEADER = 2;
export const DATA_HEADER_BYTES = 24;
/**
 * The largest control message a link takes (see MessageLink), checked before decoding: the
 * largest ringreduce sends are a point-to-point message carrying 64 KiB of eager bytes, and a
 * descriptor carrying 16 KiB of input (plus an all-to-all's splits). Links carry frames of
 * chunkBytes (up to 64 MiB), which is no reason to decode control messages that long.
 */
export const MAX_CONTROL_BYTES = 256 * 1024;

export interface DataHeader {
  seq: number;
  step: number;
  chunk: number;
  codec: number;
  scale: number;
}

// Plain objects only: no records/structures, no class revival (defends against prototype tricks).
// Received bytes pass checkMsgpack first, which admits plain data only (see msgpack-check.ts).
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, structuredClone: false });

export function encodeControl(msg: object): Buffer {
  const body = packr.pack(msg);
  const out = Buffer.allocUnsafe(body.length + 1);
  out[0] = KIND_CONTROL;
  body.copy(out, 1);
  return out;
}

export function encodeDataHeader(h: DataHeader, payloadBytes: number, kind = KIND_DATA): Buffer {
  const b = Buffer.allocUnsafe(DATA_HEADER_BYTES);
  b[0] = kind;
  b[1] = h.codec;
  b.writeUInt16LE(0, 2);
  b.writeUInt32LE(h.seq >>> 0, 4);
  b.writeUInt32LE(h.step >>> 0, 8);
  b.writeUInt32LE(h.chunk >>> 0, 12);
  b.writeFloatLE(h.scale, 16);
  b.writeUInt32LE(payloadBytes >>> 0, 20);
  return b;
}

/** One whole message (header + payload) in a single buffer. */
export function encodeData(h: DataHeader, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(DATA_HEADER_BYTES + payload.byteLength);
  encodeDataHeader(h, payload.byteLength).copy(out, 0);
  out.set(payload, DATA_HEADER_BYTES);
  return out;
}

export type Decoded =
  | { kind: 'control'; msg: Record<string, unknown> }
  | { kind: 'data'; header: DataHeader; payload: Uint8Array }
  /** A header whose payload (of `length` bytes) is the next message. */
  | { kind: 'header'; header: DataHeader; length: number };

/**
 * Decodes one message; throws RingProtocolError (naming `from`) on anything malformed, or on a
 * control message over `maxControlBytes` (before decoding it).
 */
export function decodeMessage(buf: Uint8Array, from: string, maxControlBytes = Infinity): Decoded {
  if (buf.byteLength < 1) throw new RingProtocolError(`empty message from ${from}`);
  const kind = buf[0];
  if (kind === KIND_CONTROL) {
    if (buf.byteLength > maxControlBytes) {
      throw new RingProtocolError(`control message of ${buf.byteLength} bytes from ${from} (at most ${maxControlBytes})`);
    }
    const problem = checkMsgpack(buf, 1);
    if (problem) throw new RingProtocolError(`malformed control message from ${from}: ${problem}`);
    let msg: unknown;
    try {
      msg = packr.unpack(buf.subarray(1));
    } catch (e) {
      throw new RingProtocolError(`undecodable control message from ${from}: ${peerText(String((e as Error)?.message))}`);
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg) || typeof (msg as { t?: unknown }).t !== 'string') {
      throw new RingProtocolError(`control message from ${from} is not an object with a type`);
    }
    return { kind: 'control', msg: msg as Record<string, unknown> };
  }
  if (kind === KIND_DATA || kind === KIND_DATA_HEADER) {
    if (buf.byteLength < DATA_HEADER_BYTES) {
      throw new RingProtocolError(`truncated data frame from ${from}: ${buf.byteLength} bytes < ${DATA_HEADER_BYTES}-byte header`);
    }
    const dv = new DataView(buf.buffer, buf.byteOffset, DATA_HEADER_BYTES);
    const length = dv.getUint32(20, true);
    const header = {
      codec: dv.getUint8(1),
      seq: dv.getUint32(4, true),
      step: dv.getUint32(8, true),
      chunk: dv.getUint32(12, true),
      scale: dv.getFloat32(16, true),
    };
    if (kind === KIND_DATA_HEADER) {
      if (buf.byteLength !== DATA_HEADER_BYTES) throw new RingProtocolError(`data header from ${from} has ${buf.byteLength} bytes`);
      return { kind: 'header', header, length };
    }
    if (length !== buf.byteLength - DATA_HEADER_BYTES) {
      throw new RingProtocolError(
        `data frame from ${from} declares ${length} payload bytes but carries ${buf.byteLength - DATA_HEADER_BYTES}`,
      );
    }
    return { kind: 'data', header, payload: buf.subarray(DATA_HEADER_BYTES) };
  }
  throw new RingProtocolError(`unknown message kind ${kind} from ${from}`);
}
