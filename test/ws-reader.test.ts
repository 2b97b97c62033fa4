import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { RingProtocolError } from '../src/errors.js';
import { silentLogger } from '../src/logger.js';
import type { Link, LinkHandlers } from '../src/transport/link.js';
import type { Listener } from '../src/transport/transport.js';
import { clientHandshake } from '../src/transport/ws/auth.js';
import { parseHeader } from '../src/transport/ws/frame.js';
import { Inbox } from '../src/transport/ws/inbox.js';
import { WsLink } from '../src/transport/ws/link.js';
import { FrameReader } from '../src/transport/ws/reader.js';
import { zeroMask, type TlsConfig } from '../src/transport/ws/socket.js';
import { WsTransport } from '../src/transport/ws/transport.js';
import { encodeData, encodeDataHeader, KIND_DATA_HEADER, type DataHeader } from '../src/transport/wire.js';
import { withDeadline } from './helpers/reference.js';

/**
 * The frame reader of established links (src/transport/ws/reader.ts, frame.ts, takeover.ts):
 * the parser fed every way a stream can be cut, the frames RFC 6455 forbids, and the hand-over
 * from ws on real sockets, with ringreduce's peers and with a stock ws client.
 */

// ---- frames as a peer writes them ----------------------------------------------------------------

interface Spec {
  op?: number;
  fin?: boolean;
  /** RSV bits (0-7). */
  rsv?: number;
  payload?: Uint8Array;
  /** A masking key (a client's frame); all zero is ringreduce's. */
  mask?: Uint8Array;
  /** The length the header declares, when not the payload's. */
  declared?: number;
  /** Force the 16- or 64-bit length form. */
  form?: 16 | 64;
}

function frame(s: Spec): Buffer {
  const payload = Buffer.from(s.payload ?? new Uint8Array(0));
  const n = s.declared ?? payload.length;
  const form = s.form ?? (n < 126 ? 7 : n < 65536 ? 16 : 64);
  const head = Buffer.alloc(2 + (form === 16 ? 2 : form === 64 ? 8 : 0) + (s.mask ? 4 : 0));
  head[0] = (s.fin === false ? 0 : 0x80) | ((s.rsv ?? 0) << 4) | (s.op ?? 2);
  head[1] = (s.mask ? 0x80 : 0) | (form === 7 ? n : form === 16 ? 126 : 127);
  if (form === 16) head.writeUInt16BE(n, 2);
  if (form === 64) head.writeBigUInt64BE(BigInt(n), 2);
  if (s.mask) s.mask.forEach((b, i) => (head[head.length - 4 + i] = b));
  const body = Buffer.from(payload);
  if (s.mask) for (let i = 0; i < body.length; i++) body[i] ^= s.mask[i & 3];
  return Buffer.concat([head, body]);
}

const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff);

type Event = ['message', Buffer] | ['ping', Buffer] | ['close', number, string] | ['error', RingProtocolError, number];

function reader(o: { maxPayload?: number; masked?: boolean } = {}) {
  const events: Event[] = [];
  const r = new FrameReader(
    { maxPayload: o.maxPayload ?? 1 << 20, masked: o.masked ?? false, peer: 'rank 9 (test)' },
    {
      // Copies: a delivered view may be of a chunk the test reuses.
      message: (d) => events.push(['message', Buffer.from(d)]),
      ping: (d) => events.push(['ping', Buffer.from(d)]),
      close: (code, reason) => events.push(['close', code, reason.toString()]),
      error: (e, status) => events.push(['error', e, status]),
    },
  );
  return { r, events };
}

/** Feeds `stream` cut at `cuts` (sorted offsets), in copies: the reader unmasks in place, as ws does. */
function feed(r: FrameReader, stream: Buffer, cuts: number[]): void {
  let at = 0;
  for (const c of [...cuts, stream.length]) {
    if (c > at) r.push(Buffer.from(stream.subarray(at, c)));
    at = c;
  }
}

/** The events as plain values: bytes in hex, errors as their message. */
const messages = (events: Event[]) =>
  events.map((e) => (e[0] === 'message' || e[0] === 'ping' ? [e[0], hex(e[1])] : e[0] === 'error' ? ['error', e[1].message, e[2]] : e));
const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

describe('frame reader: every way a stream can be cut', () => {
  const small = bytes(5, 1);
  const mid = bytes(300, 2); // 16-bit length
  const big = bytes(70_000, 3); // 64-bit length
  const stream = Buffer.concat([
    frame({ payload: small }),
    frame({ payload: mid }),
    frame({ op: 0x9, payload: bytes(3, 4) }),
    frame({ payload: new Uint8Array(0) }),
    frame({ payload: big }),
    frame({ op: 0xa, payload: bytes(2, 5) }),
    frame({ payload: small, form: 64 }),
  ]);
  const want = [
    ['message', hex(small)],
    ['message', hex(mid)],
    ['ping', hex(bytes(3, 4))],
    ['message', ''],
    ['message', hex(big)],
    ['message', hex(small)],
  ];

  it('in one chunk: several frames, exact bytes, pong ignored', () => {
    const { r, events } = reader();
    r.push(stream);
    expect(messages(events)).toEqual(want);
  });

  it('cut once at every offset of the first 400 bytes and around every header', () => {
    const bigAt = stream.indexOf(frame({ payload: big }).subarray(0, 10));
    const offsets = [...Array(400).keys(), ...Array.from({ length: 40 }, (_, i) => bigAt - 5 + i), ...Array.from({ length: 60 }, (_, i) => stream.length - 60 + i)];
    for (const cut of offsets) {
      const { r, events } = reader();
      feed(r, stream, [cut]);
      expect(messages(events), `cut at ${cut}`).toEqual(want);
    }
  });

  it('cut twice, at every pair of offsets of a 16-bit-length frame and the frames around it', () => {
    const s = Buffer.concat([frame({ payload: bytes(3, 7) }), frame({ payload: bytes(130, 8) }), frame({ payload: bytes(2, 9) })]);
    for (let i = 1; i < s.length; i++) {
      for (let j = i; j < s.length; j++) {
        const { r, events } = reader();
        feed(r, s, [i, j]);
        expect(messages(events), `cuts ${i} ${j}`).toEqual([
          ['message', hex(bytes(3, 7))],
          ['message', hex(bytes(130, 8))],
          ['message', hex(bytes(2, 9))],
        ]);
      }
    }
  });

  it('1-byte reads', () => {
    const { r, events } = reader();
    for (let i = 0; i < stream.length; i++) r.push(stream.subarray(i, i + 1));
    expect(messages(events)).toEqual(want);
  });

  it('a payload in one chunk is a view of it (no copy); one spanning chunks is one allocation', () => {
    const seen: Buffer[] = [];
    const r = new FrameReader({ maxPayload: 1 << 20, masked: false, peer: 'p' }, { message: (d) => seen.push(d), ping() {}, close() {}, error: (e) => { throw e; } });
    const one = frame({ payload: bytes(1000) });
    r.push(one);
    expect(seen[0].buffer).toBe(one.buffer);
    expect(seen[0].byteOffset).toBe(one.byteOffset + 4);
    // (Larger than Buffer's pool, which small allocations of the test and the reader share.)
    const two = frame({ payload: bytes(10_000, 2) });
    r.push(two.subarray(0, 500));
    r.push(two.subarray(500));
    expect(seen[1].buffer).not.toBe(two.buffer);
    expect(seen[1].byteLength).toBe(seen[1].buffer.byteLength);
    expect([...seen[1]]).toEqual([...bytes(10_000, 2)]);
  });
});

describe('frame reader: landing places', () => {
  it('a payload of the landing place’s length is copied into it, at every cut, and delivered as a view of it', () => {
    const payload = bytes(5000, 4);
    const f = frame({ payload });
    for (const cut of [0, 1, 2, 3, 4, 5, 100, 4999, 5003, f.length - 1]) {
      const seen: Buffer[] = [];
      const r = new FrameReader({ maxPayload: 1 << 20, masked: false, peer: 'p' }, { message: (d) => seen.push(d), ping() {}, close() {}, error: (e) => { throw e; } });
      const place = new Uint8Array(new ArrayBuffer(6000), 1000, 5000);
      r.land(place);
      feed(r, f, [cut]);
      expect(seen).toHaveLength(1);
      expect(seen[0].buffer).toBe(place.buffer);
      expect(seen[0].byteOffset).toBe(1000);
      expect(seen[0].byteLength).toBe(5000);
      expect([...place]).toEqual([...payload]);
    }
  });

  it('a place of another length is not used, and is taken by the next message either way', () => {
    const seen: Buffer[] = [];
    const r = new FrameReader({ maxPayload: 1 << 20, masked: false, peer: 'p' }, { message: (d) => seen.push(d), ping() {}, close() {}, error: (e) => { throw e; } });
    const place = new Uint8Array(10);
    r.land(place);
    r.push(frame({ payload: bytes(11) }));
    r.push(frame({ payload: bytes(10) }));
    expect(seen.map((s) => s.buffer === place.buffer)).toEqual([false, false]);
    expect([...place]).toEqual(Array(10).fill(0));
  });
});

describe('frame reader: fragments and control frames', () => {
  const parts = [bytes(4, 1), bytes(200, 2), bytes(0), bytes(70, 3)];
  const whole = Buffer.concat(parts);
  const fragments = (between?: Buffer) =>
    Buffer.concat(
      parts.flatMap((p, i) => {
        const f = frame({ op: i === 0 ? 2 : 0, fin: i === parts.length - 1, payload: p });
        return between && i > 0 ? [between, f] : [f];
      }),
    );

  it('reassembles a fragmented message, at every cut', () => {
    const s = fragments();
    for (let cut = 0; cut < s.length; cut++) {
      const { r, events } = reader();
      feed(r, s, [cut]);
      expect(messages(events), `cut ${cut}`).toEqual([['message', hex(whole)]]);
    }
  });

  it('control frames between fragments are handled in order, the message stays whole', () => {
    const s = Buffer.concat([fragments(frame({ op: 0x9, payload: bytes(2, 6) })), frame({ payload: bytes(3, 7) })]);
    for (let cut = 0; cut < s.length; cut += 3) {
      const { r, events } = reader();
      feed(r, s, [cut]);
      expect(messages(events)).toEqual([
        ['ping', hex(bytes(2, 6))],
        ['ping', hex(bytes(2, 6))],
        ['ping', hex(bytes(2, 6))],
        ['message', hex(whole)],
        ['message', hex(bytes(3, 7))],
      ]);
    }
  });

  it('a fragmented message lands in the place of its total length', () => {
    const seen: Buffer[] = [];
    const r = new FrameReader({ maxPayload: 1 << 20, masked: false, peer: 'p' }, { message: (d) => seen.push(d), ping() {}, close() {}, error: (e) => { throw e; } });
    const place = new Uint8Array(whole.length);
    r.land(place);
    r.push(fragments());
    expect(seen[0].buffer).toBe(place.buffer);
    expect(Buffer.from(place).equals(whole)).toBe(true);
  });

  it('fragments over the budget in all are refused at the header of the one that passes it', () => {
    const { r, events } = reader({ maxPayload: 250 });
    const s = fragments();
    const at = frame({ payload: parts[0], fin: false }).length + frame({ payload: parts[1], op: 0, fin: false }).length + frame({ op: 0, fin: false }).length;
    r.push(s.subarray(0, at + 2)); // the last fragment's header only
    expect(messages(events)).toEqual([['error', 'rank 9 (test) broke the WebSocket protocol: fragmented message of over 250 bytes, the limit', 1009]]);
  });
});

describe('frame reader: masking', () => {
  it('a client’s masked frames are unmasked, at every cut; an all-zero mask leaves the bytes as sent', () => {
    const payload = bytes(600, 5);
    for (const mask of [Uint8Array.of(0x12, 0x34, 0x56, 0x78), new Uint8Array(4)]) {
      const s = Buffer.concat([frame({ payload, mask }), frame({ op: 0x9, payload: bytes(5), mask }), frame({ payload: bytes(3), mask })]);
      for (let cut = 0; cut < s.length; cut += 7) {
        const { r, events } = reader({ masked: true });
        feed(r, s, [cut]);
        expect(messages(events), `cut ${cut}`).toEqual([
          ['message', hex(payload)],
          ['ping', hex(bytes(5))],
          ['message', hex(bytes(3))],
        ]);
      }
    }
  });

  it('a server reads only masked frames, a client only unmasked ones', () => {
    for (const masked of [true, false]) {
      const { r, events } = reader({ masked });
      r.push(frame({ payload: bytes(3), mask: masked ? undefined : new Uint8Array(4) }));
      expect(messages(events)).toEqual([['error', `rank 9 (test) broke the WebSocket protocol: ${masked ? 'unmasked frame from a client' : 'masked frame from a server'}`, 1002]]);
    }
  });
});

describe('frame reader: what RFC 6455 forbids, and what links refuse', () => {
  const violation = (what: string, status = 1002) => [['error', `rank 9 (test) broke the WebSocket protocol: ${what}`, status]];
  const cases: Array<[string, Buffer, unknown[]]> = [
    ['RSV1', frame({ rsv: 4, payload: bytes(2) }), violation('reserved bits set (0xc2): no extension was negotiated')],
    ['RSV3', frame({ rsv: 1, payload: bytes(2) }), violation('reserved bits set (0x92): no extension was negotiated')],
    ...[3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf].map((op): [string, Buffer, unknown[]] => [`opcode ${op}`, frame({ op }), violation(`reserved opcode ${op}`)]),
    ['fragmented ping', frame({ op: 0x9, fin: false }), violation('fragmented control frame (opcode 9)')],
    ['a 126-byte ping', frame({ op: 0x9, payload: bytes(126) }), violation('control frame of 126 bytes (at most 125)')],
    ['a 1-byte close', frame({ op: 0x8, payload: bytes(1) }), violation('close frame of 1 byte')],
    ['close code 1005', frame({ op: 0x8, payload: Uint8Array.of(0x03, 0xed) }), violation('close code 1005')],
    ['close reason not UTF-8', frame({ op: 0x8, payload: Uint8Array.of(0x03, 0xe8, 0xff) }), violation('close reason is not UTF-8', 1007)],
    ['continuation first', frame({ op: 0, payload: bytes(2) }), violation('continuation frame with no message begun')],
    ['a message inside a fragmented one', Buffer.concat([frame({ fin: false, payload: bytes(2) }), frame({ payload: bytes(2) })]), violation('new message inside a fragmented one')],
    ['text frame', frame({ op: 1, payload: Buffer.from('hello') }), [['error', 'text frame from rank 9 (test)', 1003]]],
  ];
  it.each(cases)('%s: a typed error, and nothing read after it', (_, f, want) => {
    const { r, events } = reader();
    r.push(Buffer.concat([f, frame({ payload: bytes(4) })]));
    expect(messages(events)).toEqual(want);
    expect(events[0][1]).toBeInstanceOf(RingProtocolError);
    expect(r.done).toBe(true);
    r.push(frame({ payload: bytes(4) }));
    expect(events).toHaveLength(1);
  });

  it('a length over the budget is refused from the header alone, before any byte of its payload', () => {
    for (const [n, form] of [[1025, 16], [1025, 64], [2 ** 40, 64], [2 ** 53 - 1, 64]] as const) {
      const { r, events } = reader({ maxPayload: 1024 });
      r.push(frame({ declared: n, form }));
      expect(messages(events)).toEqual(violation(`frame of ${n} bytes, over the 1024-byte limit`, 1009));
    }
  });

  it('64-bit lengths with the high bit set, or past 2^53 - 1, are refused', () => {
    const h = Buffer.from([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]);
    let { r, events } = reader();
    r.push(h);
    expect(messages(events)).toEqual(violation('64-bit payload length with its most significant bit set'));
    ({ r, events } = reader());
    r.push(Buffer.from([0x82, 127, 0, 0x20, 0, 0, 0, 0, 0, 0]));
    expect(messages(events)).toEqual(violation('payload length over 2^53 - 1', 1009));
  });

  it('a close frame: its code and reason (1005 when none), and nothing read after it', () => {
    for (const [payload, code, reason] of [[new Uint8Array(0), 1005, ''], [Buffer.from([0x0f, 0xa1, ...Buffer.from('bye')]), 4001, 'bye']] as const) {
      const { r, events } = reader();
      r.push(Buffer.concat([frame({ op: 0x8, payload }), frame({ payload: bytes(4) })]));
      expect(messages(events)).toEqual([['close', code, reason]]);
      expect(r.done).toBe(true);
    }
  });

  it('parseHeader asks for the bytes a header needs before judging it', () => {
    const rules = { maxPayload: 100, masked: false };
    expect(parseHeader(Buffer.from([0x82]), 0, 1, rules)).toBe(2);
    expect(parseHeader(Buffer.from([0x82, 126, 0]), 0, 3, rules)).toBe(4);
    expect(parseHeader(Buffer.from([0x82, 127, 0, 0]), 0, 4, rules)).toBe(10);
    expect(parseHeader(Buffer.from([0x82, 0xfe, 0, 0, 1]), 0, 5, { ...rules, masked: true })).toBe(8);
  });
});

// ---- the hand-over from ws on real sockets ---------------------------------------------------------

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

type Got = { seq: number; payload: Buffer; landed: boolean };
/** Handlers that record data frames; `places` are landing places by seq. */
function recorder(places = new Map<number, Uint8Array>()) {
  const got: Got[] = [];
  let closed: { error: Error | undefined } | undefined;
  const h: LinkHandlers = {
    data: (hd, p) => got.push({ seq: hd.seq, payload: Buffer.from(p), landed: places.get(hd.seq)?.buffer === p.buffer }),
    land: (hd) => places.get(hd.seq),
    control: () => {},
    closed: (error) => (closed = { error }),
  };
  return { got, h, closed: () => closed };
}

const hdr = (seq: number): DataHeader => ({ seq, step: 0, chunk: 0, codec: 0, scale: 1 });
const readerOf = (link: Link) => (link as unknown as { reader?: { active: boolean } }).reader;
const until = async (what: string, ok: () => boolean) => {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > 10_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** A plain ws server and a client of ringreduce's kind (zero mask) connected to it, open. */
async function wsPair(maxPayload = 1 << 20) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload, perMessageDeflate: false });
  cleanup.push(() => new Promise((r) => server.close(r)));
  await new Promise((r) => server.once('listening', r));
  const serverSide = new Promise<WebSocket>((r) => server.once('connection', r));
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as { port: number }).port}/`, { maxPayload, perMessageDeflate: false, generateMask: zeroMask });
  const inbox = new Inbox(client);
  await new Promise((r) => client.once('open', r));
  const srv = await serverSide;
  cleanup.push(() => (client.terminate(), srv.terminate()));
  return { client, inbox, srv, socket: (client as unknown as { _socket: Socket })._socket };
}

/** A self-signed certificate that is its own CA, for wss:// links (a TLSSocket emits 'data' as a TCP one does). */
const tls = ((): TlsConfig | undefined => {
  const dir = mkdtempSync(join(tmpdir(), 'rr-reader-'));
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    const r = spawnSync('openssl', ['req', '-x509', ...ec, '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '2', '-subj', '/CN=rank'], { stdio: 'ignore' });
    if (r.status !== 0) return undefined;
    const cert = readFileSync(join(dir, 'c.pem'), 'utf8');
    return { cert, key: readFileSync(join(dir, 'k.pem'), 'utf8'), ca: cert };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
})();

describe('the hand-over from ws: bytes ws read and did not parse are taken over', () => {
  // Chunks are injected on the client's socket as if read from it, so the cuts are exact.
  const m = (seq: number, n: number) => encodeData(hdr(seq), bytes(n, seq));
  const f = (b: Buffer) => frame({ payload: b });

  it('mid-frame at the link’s birth: ws reads that message, the reader the rest (several frames in one chunk, a header cut)', async () => {
    const { inbox, socket } = await wsPair();
    const stream = Buffer.concat([f(m(1, 10)), f(m(2, 3000)), f(m(3, 100_000)), f(m(4, 5)), f(encodeDataHeader(hdr(5), 70_000, KIND_DATA_HEADER)), f(Buffer.from(bytes(70_000, 5))), f(m(6, 1))]);
    const at3 = f(m(1, 10)).length + f(m(2, 3000)).length;
    const cuts = [at3 + 1000, at3 + f(m(3, 100_000)).length + f(m(4, 5)).length + 1, stream.length - 3];
    // Before the link: messages 1 and 2 and the start of 3 (ws parses 1, 2 into the inbox).
    socket.emit('data', stream.subarray(0, cuts[0]));
    const link = new WsLink(9, 'rank 9 (test)', inbox);
    const place = new Uint8Array(70_000);
    const rec = recorder(new Map([[5, place]]));
    link.setHandlers(rec.h);
    expect(readerOf(link)?.active).toBe(false); // ws is in the middle of message 3
    // The rest of 3, all of 4, one byte of 5's header: the switch follows message 3.
    socket.emit('data', stream.subarray(cuts[0], cuts[1]));
    expect(readerOf(link)?.active).toBe(true);
    socket.emit('data', stream.subarray(cuts[1], cuts[2]));
    socket.emit('data', stream.subarray(cuts[2]));
    expect(rec.got.map((g) => g.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const g of rec.got) expect(g.payload.equals(Buffer.from(bytes(g.seq === 5 ? 70_000 : [0, 10, 3000, 100_000, 5, 0, 1][g.seq], g.seq))), `seq ${g.seq}`).toBe(true);
    expect(rec.got.find((g) => g.seq === 5)!.landed).toBe(true);
    link.close();
  });

  it('between frames at the link’s birth (one header byte unparsed): the reader takes that byte', async () => {
    const { inbox, socket } = await wsPair();
    const stream = Buffer.concat([f(m(1, 10)), f(m(2, 20))]);
    const cut = f(m(1, 10)).length + 1;
    socket.emit('data', stream.subarray(0, cut));
    const link = new WsLink(9, 'rank 9 (test)', inbox);
    const rec = recorder();
    link.setHandlers(rec.h);
    expect(readerOf(link)?.active).toBe(true);
    socket.emit('data', stream.subarray(cut));
    expect(rec.got.map((g) => [g.seq, g.payload.length])).toEqual([[1, 10], [2, 20]]);
    link.close();
  });

  it('a violation among the bytes taken over at the switch: a typed error, close code 1002 to the peer', async () => {
    const { inbox, socket, srv } = await wsPair();
    const one = f(m(1, 3000));
    socket.emit('data', one.subarray(0, 1000));
    const link = new WsLink(9, 'rank 9 (test)', inbox);
    const rec = recorder();
    link.setHandlers(rec.h);
    const peerSaw = new Promise<number>((r) => srv.once('close', r));
    socket.emit('data', Buffer.concat([one.subarray(1000), frame({ op: 3 }), f(m(2, 10))]));
    expect(rec.got.map((g) => g.seq)).toEqual([1]);
    await until('link closed', () => rec.closed() !== undefined);
    expect(rec.closed()!.error).toBeInstanceOf(RingProtocolError);
    expect(rec.closed()!.error!.message).toBe('rank 9 (test) broke the WebSocket protocol: reserved opcode 3');
    expect(await withDeadline(peerSaw, 5000, 'peer close')).toBe(1002);
  });

  it('a paused link whose socket closes still reads what the socket holds (as ws did), not ws', async () => {
    const { inbox, socket } = await wsPair();
    const link = new WsLink(9, 'rank 9 (test)', inbox);
    const rec = recorder();
    link.setHandlers(rec.h);
    expect(readerOf(link)?.active).toBe(true);
    const two = f(m(2, 20));
    socket.emit('data', Buffer.concat([f(m(1, 10)), two.subarray(0, 5)]));
    link.pause!(true);
    // Bytes the socket read while paused wait in its buffer: the rest of a frame the reader began.
    socket.push(two.subarray(5));
    expect(rec.got.map((g) => g.seq)).toEqual([1]);
    socket.destroy();
    await until('link closed', () => rec.closed() !== undefined);
    expect(rec.got.map((g) => [g.seq, g.payload.length])).toEqual([[1, 10], [2, 20]]);
    expect(rec.closed()!.error?.message).toMatch(/closed \(code 1006\)/);
  });

  it('payloads with no landing place share the link’s scratch buffer (lent for the call), each exact when delivered', async () => {
    const { inbox, socket } = await wsPair();
    const link = new WsLink(9, 'rank 9 (test)', inbox);
    const seen: Array<{ seq: number; buffer: ArrayBufferLike; ok: boolean }> = [];
    link.setHandlers({
      data: (h, p) => seen.push({ seq: h.seq, buffer: p.buffer, ok: Buffer.from(p).equals(Buffer.from(bytes(70_000 - h.seq, h.seq))) }),
      control: () => {},
      closed: () => {},
    });
    const stream = Buffer.concat([1, 2, 3].flatMap((seq) => [f(encodeDataHeader(hdr(seq), 70_000 - seq, KIND_DATA_HEADER)), f(Buffer.from(bytes(70_000 - seq, seq)))]));
    for (let at = 0; at < stream.length; at += 65_536) socket.emit('data', stream.subarray(at, at + 65_536));
    expect(seen.map((x) => [x.seq, x.ok])).toEqual([[1, true], [2, true], [3, true]]);
    expect(seen[1].buffer).toBe(seen[0].buffer);
    expect(seen[2].buffer).toBe(seen[0].buffer);
    link.close();
  });

  it.each(tls ? ['ws', 'wss'] : ['ws'])('frames a real peer sends immediately after the handshake arrive whole and in order (both directions, %s)', async (scheme) => {
    const token = randomBytes(16).toString('hex');
    const mk = (rank: number) =>
      new WsTransport({ rank, token, host: '127.0.0.1', maxPayload: (1 << 20) + 4096, logger: silentLogger, tls: scheme === 'wss' ? tls : undefined });
    const sizes = [1, 70_000, 1 << 20, 5, 300_000, 64 * 1024, 3];
    const burst = (link: Link) => sizes.forEach((n, i) => link.sendData(hdr(i), bytes(n, i), () => {}));
    const want = sizes.map((n, i) => [i, n]);
    for (let round = 0; round < 3; round++) {
      const accepted = recorder();
      const server = mk(0);
      let serverLink: Link | undefined;
      const listener: Listener = await server.listen({
        admit: () => undefined,
        accepted: (_r, _c, link) => {
          serverLink = link;
          link.setHandlers(accepted.h);
          burst(link);
        },
      });
      cleanup.push(() => listener.close());
      const clientLink = await mk(1).connect(0, listener.address, 'ring', Date.now() + 10_000, 'test');
      cleanup.push(() => clientLink.close());
      const got = recorder();
      clientLink.setHandlers(got.h);
      burst(clientLink);
      await withDeadline(until('both bursts', () => got.got.length === sizes.length && accepted.got.length === sizes.length), 15_000, 'bursts');
      for (const rec of [got, accepted]) {
        expect(rec.got.map((g) => [g.seq, g.payload.length])).toEqual(want);
        for (const g of rec.got) expect(g.payload.equals(Buffer.from(bytes(sizes[g.seq], g.seq)))).toBe(true);
      }
      expect(readerOf(clientLink)?.active).toBe(true);
      expect(readerOf(serverLink!)?.active).toBe(true);
      await listener.close();
    }
  });
});

describe('a stock ws client (random masks) against a link server', () => {
  const token = randomBytes(16).toString('hex');
  const MAX = 256 * 1024;

  async function serve() {
    const links: Link[] = [];
    const rec = recorder();
    const transport = new WsTransport({ rank: 0, token, host: '127.0.0.1', maxPayload: MAX, logger: silentLogger });
    const listener = await transport.listen({
      admit: () => undefined,
      accepted: (_r, _c, link) => {
        links.push(link);
        link.setHandlers(rec.h);
      },
    });
    cleanup.push(() => listener.close());
    return { links, rec, url: `ws://127.0.0.1:${listener.address.port}/` };
  }

  async function stockClient(url: string, withToken = true) {
    const ws = new WebSocket(url); // ws's defaults: random masks, permessage-deflate offered
    cleanup.push(() => ws.terminate());
    const inbox = new Inbox(ws);
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    await clientHandshake(inbox, { token: withToken ? token : 'wrong', rank: 1, serverId: 'rank:0', timeoutMs: 5000, peer: 'server' });
    return { ws, inbox };
  }

  it('without the token it is refused, as before', async () => {
    const { url } = await serve();
    await expect(stockClient(url, false)).rejects.toThrow(/could not prove|closed the connection/);
  });

  it('with the token it is served: masked frames (whole, fragmented) read exactly, pings answered, its close code reported', async () => {
    const { links, rec, url } = await serve();
    const { ws } = await stockClient(url);
    await until('link', () => links.length === 1);
    const link = links[0];
    const big = bytes(200_000, 2);
    ws.send(encodeData(hdr(1), bytes(100, 1)));
    ws.send(encodeData(hdr(2), big));
    // A fragmented message with a ping between its fragments.
    const msg3 = encodeData(hdr(3), bytes(5000, 3));
    ws.send(msg3.subarray(0, 1000), { fin: false });
    ws.ping(Buffer.from('are you there'));
    ws.send(msg3.subarray(1000, 4000), { fin: false });
    ws.send(msg3.subarray(4000), { fin: true });
    const pong = new Promise<Buffer>((r) => ws.once('pong', r));
    await withDeadline(until('3 messages', () => rec.got.length === 3), 10_000, 'messages');
    expect(readerOf(link)?.active).toBe(true);
    expect(rec.got.map((g) => g.seq)).toEqual([1, 2, 3]);
    expect(rec.got[0].payload.equals(Buffer.from(bytes(100, 1)))).toBe(true);
    expect(rec.got[1].payload.equals(Buffer.from(big))).toBe(true);
    expect(rec.got[2].payload.equals(Buffer.from(bytes(5000, 3)))).toBe(true);
    expect((await pong).toString()).toBe('are you there');
    const closed = new Promise<number>((r) => ws.once('close', r));
    ws.close(4001, 'done');
    expect(await withDeadline(closed, 5000, 'close')).toBe(4001);
    await until('link closed', () => rec.closed() !== undefined);
    expect(rec.closed()!.error?.message).toMatch(/closed \(code 4001\)/);
  });

  it('a message over maxPayload: a typed error naming the peer, and close code 1009 to the client', async () => {
    const { links, rec, url } = await serve();
    const { ws } = await stockClient(url);
    await until('link', () => links.length === 1);
    const closed = new Promise<number>((r) => ws.once('close', r));
    ws.send(Buffer.alloc(MAX + 1));
    expect(await withDeadline(closed, 5000, 'close')).toBe(1009);
    await until('link closed', () => rec.closed() !== undefined);
    const e = rec.closed()!.error!;
    expect(e).toBeInstanceOf(RingProtocolError);
    expect(e.message).toMatch(/^rank 1 \(.*\) broke the WebSocket protocol: frame of 262145 bytes, over the 262144-byte limit$/);
  });

  it('a reserved opcode: a typed error, close code 1002; a text frame: the error as before', async () => {
    for (const [send, code, re] of [
      [(ws: WebSocket) => (ws as unknown as { _socket: Socket })._socket.write(frame({ op: 3, mask: randomBytes(4) })), 1002, /broke the WebSocket protocol: reserved opcode 3/],
      [(ws: WebSocket) => ws.send('hello'), 1003, /^text frame from rank 1/],
    ] as const) {
      const { links, rec, url } = await serve();
      const { ws } = await stockClient(url);
      await until('link', () => links.length === 1);
      const closed = new Promise<number>((r) => ws.once('close', r));
      send(ws);
      expect(await withDeadline(closed, 5000, 'close')).toBe(code);
      await until('link closed', () => rec.closed() !== undefined);
      expect(rec.closed()!.error).toBeInstanceOf(RingProtocolError);
      expect(rec.closed()!.error!.message).toMatch(re);
    }
  });
});
