import { randomBytes } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, lstatSync, openSync, readdirSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { sharedMemoryMap, sharedMemoryReserve } from '../../kernels/index.js';
import { RingProtocolError } from '../../errors.js';
import { Mailbox, MAILBOX_HEAD_BYTES, MAILBOX_RING_BYTES } from './mailbox.js';
import { DATA_HEADER_BYTES, encodeDataHeader, type DataHeader } from '../wire.js';

/**
 * Shared-memory payloads for ring links between ranks on one host.
 *
 * Over loopback TCP every payload byte is copied twice by the kernel (into the socket, out of it),
 * and on this kind of machine that is most of an all-reduce's CPU time (measured: ~0.36 ns/byte
 * of system time per rank, against ~0.25 for everything ringreduce does in user space). When the
 * two ends of a link share a host, the sender instead copies a frame's payload into a slot of a
 * region both processes map (a file in /dev/shm, mapped by the native addon), and the WebSocket
 * carries only a small notice: the 24-byte data header plus the slot number. The receiver reduces
 * straight out of the slot and hands the slot back with a 'free' notice. The WebSocket still
 * orders everything, carries the control messages and does flow control; a link whose peer is on
 * another host (or without the addon) simply keeps sending payloads over the socket.
 *
 * Set-up, once per link right after the authenticated handshake: the sending side creates the
 * region (mode 0600, O_EXCL), reserves its memory (so a /dev/shm too small for it is an ENOSPC
 * now, and the link keeps its payloads on the socket, rather than a SIGBUS at the first write to
 * a page tmpfs cannot supply), writes a random nonce at its start and offers {slots, slotBytes,
 * nonce, path}; the receiving side opens the path without following a symbolic link, checks the
 * file (regular, this user's, one link, exactly the offered size) before mapping it, and accepts
 * only if it reads the same nonce — so a peer on another host, where the path does not exist or
 * is another file, declines, and a peer that names some other file of ours never gets it mapped.
 * The sender then unlinks the file: the mapping lives until both processes drop it, and nothing
 * is left in /dev/shm even if a rank is killed later.
 *
 * Link-level message kinds (byte 0 of a WebSocket message; see wire.ts for 0..2):
 *   3 OFFER  [3][0 0 0][u32 slots][u32 slotBytes][16-byte nonce][path, UTF-8]   (slots = 0: no offer)
 *   4 REPLY  [4][ok: 0|1][reason, UTF-8]
 *   5 DATA   24-byte data header with kind 5 (length = payload bytes) + [u32 slot]
 *   6 FREE   [6][0 0 0][u32 slot]
 *   7 WAKE   [7]   (a doorbell: see Mailbox)
 */
export const KIND_SHM_OFFER = 3;
export const KIND_SHM_REPLY = 4;
export const KIND_SHM_DATA = 5;
export const KIND_SHM_FREE = 6;
export const KIND_SHM_WAKE = 7;
export const FIRST_LINK_KIND = KIND_SHM_OFFER;
export const LAST_LINK_KIND = KIND_SHM_WAKE;

/**
 * Region layout: a 64-byte preamble (the nonce); two mailboxes (see Mailbox), the first carrying
 * messages from the region's creator to the peer, the second back; then `slots` slots of
 * `slotBytes` (a multiple of 64).
 */
const NONCE_AREA = 64;
const MAILBOX_BYTES = MAILBOX_HEAD_BYTES + MAILBOX_RING_BYTES;
const PREAMBLE = NONCE_AREA + 2 * MAILBOX_BYTES;
const NONCE = 16;
const SHM_DIR = '/dev/shm';

/** The map function of the native addon, or why there is none. */
export function shmAvailable(): string | undefined {
  if (!sharedMemoryMap) return 'the native addon (which maps shared memory) is not loaded';
  if (!existsSync(SHM_DIR)) return `${SHM_DIR} does not exist`;
  return undefined;
}

export interface ShmRegion {
  bytes: Uint8Array;
  slots: number;
  slotBytes: number;
}

export function slotView(r: ShmRegion, slot: number, length: number): Uint8Array {
  return r.bytes.subarray(PREAMBLE + slot * r.slotBytes, PREAMBLE + slot * r.slotBytes + length);
}

/**
 * The region's two mailboxes as seen from one side: the creator (the side that sends payloads)
 * writes the first and reads the second; its peer the other way round.
 */
export function mailboxes(r: ShmRegion, creator: boolean, peer: string): { out: Mailbox; in: Mailbox } {
  const first = new Mailbox(r.bytes, NONCE_AREA, peer);
  const second = new Mailbox(r.bytes, NONCE_AREA + MAILBOX_BYTES, peer);
  return creator ? { out: first, in: second } : { out: second, in: first };
}

/**
 * A region's file lives only between its offer and the peer's reply; a process killed in that
 * window leaves it behind. Before creating its first region, a process removes such leftovers:
 * files of processes that no longer exist, older than a minute (a live offer never is).
 */
let swept = false;
export function sweepStaleRegions(now = Date.now()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(SHM_DIR);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = /^ringreduce-(\d+)-[0-9a-f]{16}$/.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    const path = `${SHM_DIR}/${name}`;
    try {
      if (now - lstatSync(path).mtimeMs < 60_000) continue;
      unlinkSync(path);
      removed.push(path);
    } catch {
      // Gone already, or not ours to remove.
    }
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Creates a region for `slots` payloads of up to `payloadBytes`; returns it with its offer
 * message, or the reason there is none (its memory could not be reserved: /dev/shm is full).
 */
export function createRegion(slots: number, payloadBytes: number): { region: ShmRegion; offer: Buffer; path: string } | string {
  if (!swept) {
    swept = true;
    sweepStaleRegions();
  }
  const slotBytes = Math.ceil(payloadBytes / 64) * 64;
  const size = PREAMBLE + slots * slotBytes;
  const path = `${SHM_DIR}/ringreduce-${process.pid}-${randomBytes(8).toString('hex')}`;
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  let bytes: Uint8Array;
  try {
    try {
      reserveFile(fd, size);
    } catch (e) {
      unlinkQuietly(path);
      const why = `cannot reserve a shared-memory region of ${mib(size)} in ${SHM_DIR} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}${free(SHM_DIR)})`;
      if (reserveWarning === undefined) reserveWarning = why;
      return why;
    }
    bytes = new Uint8Array(sharedMemoryMap!(fd, size));
  } catch (e) {
    unlinkQuietly(path);
    throw e;
  } finally {
    closeSync(fd);
  }
  const nonce = randomBytes(NONCE);
  bytes.set(nonce, 0);
  const p = Buffer.from(path, 'utf8');
  const offer = Buffer.alloc(12 + NONCE + p.length);
  offer[0] = KIND_SHM_OFFER;
  offer.writeUInt32LE(slots, 4);
  offer.writeUInt32LE(slotBytes, 8);
  nonce.copy(offer, 12);
  p.copy(offer, 12 + NONCE);
  return { region: { bytes, slots, slotBytes }, offer, path };
}

/**
 * Gives the empty file `fd` its `bytes` now: posix_fallocate through the addon (`native`), else
 * (no addon, or a filesystem that cannot) by writing zeros. Either way a full filesystem throws
 * here (code 'ENOSPC'), where a file merely extended with ftruncate would have been sparse and
 * failed later, at the first write to each page: tmpfs answers that with SIGBUS.
 */
export function reserveFile(fd: number, bytes: number, native = sharedMemoryReserve): void {
  if (native) {
    try {
      return native(fd, bytes);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EOPNOTSUPP' && code !== 'ENOTSUP' && code !== 'EINVAL') throw e;
    }
  }
  writeZeros(fd, bytes);
}

/** The TypeScript reserve: `bytes` zeros written from offset 0 (1 MiB at a time). */
export function writeZeros(fd: number, bytes: number): void {
  const zeros = Buffer.alloc(Math.min(bytes, 1 << 20));
  for (let at = 0; at < bytes; ) at += writeSync(fd, zeros, 0, Math.min(zeros.length, bytes - at), at);
}

/** The first reservation that failed in this process, once (the caller warns about it). */
let reserveWarning: string | undefined;
let warned = false;
export function takeReserveWarning(): string | undefined {
  if (warned || reserveWarning === undefined) return undefined;
  warned = true;
  return reserveWarning;
}

const mib = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`;
function free(dir: string): string {
  try {
    const s = statfsSync(dir);
    return `, ${mib(s.bavail * s.bsize)} free of ${mib(s.blocks * s.bsize)}`;
  } catch {
    return '';
  }
}

export function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone: nothing to clean.
  }
}

/** What acceptOffer() says about a "no offer" (which gets no reply). */
export const NO_OFFER = 'the peer offers no shared memory';

export const noOffer = (): Buffer => {
  const b = Buffer.alloc(12 + NONCE);
  b[0] = KIND_SHM_OFFER;
  return b;
};

export function encodeReply(ok: boolean, reason: string): Buffer {
  const r = Buffer.from(reason, 'utf8');
  const b = Buffer.alloc(2 + r.length);
  b[0] = KIND_SHM_REPLY;
  b[1] = ok ? 1 : 0;
  r.copy(b, 2);
  return b;
}

export function decodeReply(buf: Uint8Array, from: string): { ok: boolean; reason: string } {
  if (buf.byteLength < 2 || buf[1] > 1) throw new RingProtocolError(`malformed shared-memory reply from ${from}`);
  return { ok: buf[1] === 1, reason: Buffer.from(buf.buffer, buf.byteOffset + 2, buf.byteLength - 2).toString('utf8') };
}

/**
 * The receiving side of an offer: maps the region if this process can see the very same memory.
 * Returns the region, or the reason to decline. Throws RingProtocolError on a malformed offer.
 */
export function acceptOffer(buf: Uint8Array, maxPayload: number, enabled: boolean, from: string): ShmRegion | string {
  if (buf.byteLength < 12 + NONCE) throw new RingProtocolError(`truncated shared-memory offer from ${from}`);
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const slots = b.readUInt32LE(4);
  const slotBytes = b.readUInt32LE(8);
  if (slots === 0) return NO_OFFER;
  if (!enabled) return 'shared memory is disabled on this rank';
  const missing = shmAvailable();
  if (missing) return missing;
  if (slots > 1024 || slotBytes === 0 || slotBytes % 64 !== 0 || slotBytes > maxPayload + 64) {
    throw new RingProtocolError(`shared-memory offer from ${from} has a bad geometry (${slots} x ${slotBytes} bytes)`);
  }
  const path = b.subarray(12 + NONCE).toString('utf8');
  if (!path.startsWith(`${SHM_DIR}/ringreduce-`) || path.includes('/..') || path.includes('\0')) {
    throw new RingProtocolError(`shared-memory offer from ${from} names an unexpected path`);
  }
  const size = PREAMBLE + slots * slotBytes;
  let fd: number;
  try {
    // Not through a symbolic link, and without blocking on a FIFO: the peer names the path.
    fd = openSync(path, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new RingProtocolError(`shared-memory offer from ${from} names a symbolic link (${path})`);
    return `cannot map the peer's region (${code ?? (e as Error).message}): not on this host`;
  }
  let bytes: Uint8Array;
  try {
    // Checked before it is mapped: nothing of a file that is not a region is ever touched.
    const st = fstatSync(fd);
    const me = process.geteuid?.();
    if (me !== undefined && st.uid !== me) return `the peer's region ${path} belongs to uid ${st.uid}, not to this user (uid ${me})`;
    const bad = !st.isFile()
      ? 'is not a regular file'
      : st.nlink !== 1
        ? `has ${st.nlink} links`
        : st.size !== size
          ? `has ${st.size} bytes, not the ${size} of ${slots} x ${slotBytes}-byte slots`
          : undefined;
    if (bad) throw new RingProtocolError(`shared-memory offer from ${from} names a file that is not a region: ${path} ${bad}`);
    try {
      bytes = new Uint8Array(sharedMemoryMap!(fd, size));
    } catch (e) {
      return `cannot map the peer's region (${(e as Error).message})`;
    }
  } finally {
    closeSync(fd);
  }
  if (!bytes.subarray(0, NONCE).every((v, i) => v === b[12 + i])) return 'the region differs from the peer’s: not on this host';
  return { bytes, slots, slotBytes };
}

export function encodeShmData(h: DataHeader, payloadBytes: number, slot: number): Buffer {
  const b = Buffer.allocUnsafe(DATA_HEADER_BYTES + 4);
  encodeDataHeader(h, payloadBytes, KIND_SHM_DATA).copy(b, 0);
  b.writeUInt32LE(slot, DATA_HEADER_BYTES);
  return b;
}

export const WAKE = Buffer.of(KIND_SHM_WAKE);

export function encodeFree(slot: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = KIND_SHM_FREE;
  b.writeUInt32LE(slot, 4);
  return b;
}

/** The slot number of a DATA or FREE message (already known to be of that kind). */
export function slotOf(buf: Uint8Array, from: string): number {
  const at = buf[0] === KIND_SHM_DATA ? DATA_HEADER_BYTES : 4;
  if (buf.byteLength !== at + 4) throw new RingProtocolError(`shared-memory message of ${buf.byteLength} bytes from ${from}`);
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).readUInt32LE(at);
}
