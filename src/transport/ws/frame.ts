/**
 * RFC 6455 frame headers (section 5.2), as a ring link reads them:
 *
 *   byte 0   FIN | RSV1 RSV2 RSV3 | opcode (4 bits)
 *   byte 1   MASK | length (7 bits): 0-125, or 126 (a 16-bit length follows), or 127 (64-bit)
 *   then     the extended length, big-endian; then, if MASK, the 4-byte masking key
 *
 * A header is 2 to 14 bytes. Links negotiate no extension, so the RSV bits must be clear.
 */
export const OP_CONTINUATION = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

/** The longest header: 2 bytes, a 64-bit length and a masking key. */
export const MAX_HEADER_BYTES = 14;
/** Control frames carry at most this many payload bytes (RFC 6455 5.5). */
export const MAX_CONTROL_PAYLOAD = 125;

export interface FrameHeader {
  fin: boolean;
  opcode: number;
  /** Payload bytes that follow the header. */
  length: number;
  /** The masking key (a view into the bytes parsed), or undefined when MASK is clear. */
  mask: Uint8Array | undefined;
  /** Bytes the header took. */
  size: number;
}

/** A header that breaks RFC 6455 or this link's limits: what, and the close code to answer with. */
export interface FrameViolation {
  violation: string;
  status: number;
}

/** How many bytes the header of a frame has, from its second byte (MASK and the 7-bit length). */
export function headerSize(b1: number): number {
  const len7 = b1 & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}

export interface HeaderRules {
  /** The longest payload a frame may declare (the link's budget, checked before any byte of it). */
  maxPayload: number;
  /** Whether frames must be masked (a server reads a client's) or must not be (a client reads a server's). */
  masked: boolean;
}

/**
 * Parses the header at `b[at..end)`: the header, or the number of bytes needed in all when fewer
 * are there, or a violation. Checks everything the header alone can tell (opcode, RSV bits, FIN
 * and length of control frames, masking, the length against the budget); what depends on earlier
 * frames (a continuation with no message begun) is the reader's to check.
 */
export function parseHeader(b: Uint8Array, at: number, end: number, rules: HeaderRules): FrameHeader | FrameViolation | number {
  if (end - at < 2) return 2;
  const b0 = b[at];
  const b1 = b[at + 1];
  const size = headerSize(b1);
  if (end - at < size) return size;
  if (b0 & 0x70) return { violation: `reserved bits set (${hex(b0)}): no extension was negotiated`, status: 1002 };
  const opcode = b0 & 0x0f;
  const fin = (b0 & 0x80) !== 0;
  const control = opcode >= OP_CLOSE;
  if (opcode > OP_BINARY && !(control && opcode <= OP_PONG)) return { violation: `reserved opcode ${opcode}`, status: 1002 };
  const masked = (b1 & 0x80) !== 0;
  if (masked !== rules.masked) return { violation: rules.masked ? 'unmasked frame from a client' : 'masked frame from a server', status: 1002 };
  let length = b1 & 0x7f;
  let p = at + 2;
  if (length === 126) {
    length = (b[p] << 8) | b[p + 1];
    p += 2;
  } else if (length === 127) {
    const hi = ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
    const lo = ((b[p + 4] << 24) | (b[p + 5] << 16) | (b[p + 6] << 8) | b[p + 7]) >>> 0;
    p += 8;
    if (hi & 0x80000000) return { violation: '64-bit payload length with its most significant bit set', status: 1002 };
    // Beyond 2^53 - 1 the number is not exact; any such length is over every budget anyway.
    if (hi > 0x1fffff) return { violation: 'payload length over 2^53 - 1', status: 1009 };
    length = hi * 2 ** 32 + lo;
  }
  if (control) {
    if (!fin) return { violation: `fragmented control frame (opcode ${opcode})`, status: 1002 };
    if (length > MAX_CONTROL_PAYLOAD) return { violation: `control frame of ${length} bytes (at most ${MAX_CONTROL_PAYLOAD})`, status: 1002 };
    if (opcode === OP_CLOSE && length === 1) return { violation: 'close frame of 1 byte', status: 1002 };
  } else if (length > rules.maxPayload) {
    return { violation: `frame of ${length} bytes, over the ${rules.maxPayload}-byte limit`, status: 1009 };
  }
  return { fin, opcode, length, mask: masked ? b.subarray(p, p + 4) : undefined, size };
}

const hex = (x: number) => `0x${x.toString(16).padStart(2, '0')}`;
