import { RingProtocolError } from '../../errors.js';

/**
 * A one-way message queue in a shared-memory region (see region.ts): how link messages travel
 * between two ranks on one host while the receiving process is polling anyway, without a system
 * call.
 *
 * Why: a message over loopback TCP to a process asleep in epoll costs its sender 60-75 µs in
 * writev on this kind of machine (the wake-up of the other process is paid there), most of a small
 * all-reduce. A process that is busy polling (Communicator, busyPollUs) says so in its mailbox's
 * state word; its neighbour then writes messages into the mailbox instead of the socket, and the
 * poller finds them on its next turn.
 *
 * Order: a link's messages keep one order whichever way each travels. Every mailbox entry records
 * how many socket messages its sender had sent before it; the receiver takes an entry only once it
 * has received that many socket messages, and before handling socket message k it takes every
 * entry sent before it (those were written to memory before message k was written to the socket).
 *
 * Sleeping: a poller that stops (nothing pending, or nothing arrived for busyPollUs) marks itself
 * asleep and then looks at its mailbox once more; a sender publishes its entry and then reads the
 * state. Both steps are sequentially consistent atomics, so either the sleeper sees the entry or
 * the sender sees the sleeper — and then also rings the doorbell, a 1-byte socket message that
 * wakes it. While the receiver sleeps, senders use the socket: nothing is stranded.
 *
 * Layout at `offset` in the region: line 0 the write index (bytes ever written, mod 2^32), line 1
 * the read index, line 2 the reader's state; then a ring of MAILBOX_RING bytes. An entry is
 * [u32 length][u32 socket messages before it][message], padded to 8 bytes; a length of WRAP means
 * "continue at the start of the ring". The peer is an authenticated rank, but its indices and
 * lengths are still checked: nonsense is a protocol error, never a read outside the ring.
 */
export const MAILBOX_HEAD_BYTES = 192;
export const MAILBOX_RING_BYTES = 64 * 1024;
/** Larger messages go on the socket (an inline all-reduce descriptor is up to ~16.1 KiB). */
export const MAILBOX_MAX_MESSAGE = 20 * 1024;
const WRITE = 0;
const READ = 16;
const STATE = 32;
const ASLEEP = 0;
const AWAKE = 1;
const WRAP = 0xffffffff;

const align8 = (n: number): number => (n + 7) & ~7;

export class Mailbox {
  private readonly head: Uint32Array;
  private readonly ring: Uint8Array;
  private readonly view: DataView;
  /** This side's own index (the writer's write index, or the reader's read index). */
  private mine: number;

  constructor(region: Uint8Array, offset: number, private readonly from: string) {
    this.head = new Uint32Array(region.buffer, region.byteOffset + offset, MAILBOX_HEAD_BYTES / 4);
    this.ring = new Uint8Array(region.buffer, region.byteOffset + offset + MAILBOX_HEAD_BYTES, MAILBOX_RING_BYTES);
    this.view = new DataView(this.ring.buffer, this.ring.byteOffset, MAILBOX_RING_BYTES);
    this.mine = 0;
  }

  /**
   * As the writer: puts the message made of `parts` (`bytes` in all) into the ring if the reader
   * is polling and there is room. Returns 0 when not posted (use the socket), 1 when posted, 2
   * when posted but the reader fell asleep meanwhile (ring the doorbell).
   */
  post(parts: readonly Uint8Array[], bytes: number, socketSent: number): 0 | 1 | 2 {
    if (bytes > MAILBOX_MAX_MESSAGE || Atomics.load(this.head, STATE) !== AWAKE) return 0;
    const need = align8(8 + bytes);
    let w = this.mine;
    let at = w % MAILBOX_RING_BYTES;
    const pad = MAILBOX_RING_BYTES - at < need ? MAILBOX_RING_BYTES - at : 0;
    const used = (w - Atomics.load(this.head, READ)) >>> 0;
    if (MAILBOX_RING_BYTES - used < pad + need) return 0;
    if (pad > 0) {
      this.view.setUint32(at, WRAP, true);
      w = (w + pad) >>> 0;
      at = 0;
    }
    this.view.setUint32(at, bytes, true);
    this.view.setUint32(at + 4, socketSent >>> 0, true);
    let p = at + 8;
    for (const part of parts) {
      this.ring.set(part, p);
      p += part.byteLength;
    }
    this.mine = (w + need) >>> 0;
    // Publish (a locked exchange: a full fence), then see whether the reader is still polling.
    Atomics.exchange(this.head, WRITE, this.mine);
    return Atomics.load(this.head, STATE) === AWAKE ? 1 : 2;
  }

  /**
   * As the reader: a copy of the next message, if there is one that may be taken once
   * `socketReceived` socket messages have arrived; undefined otherwise.
   */
  take(socketReceived: number): Uint8Array | undefined {
    for (;;) {
      const w = Atomics.load(this.head, WRITE);
      const r = this.mine;
      const avail = (w - r) >>> 0;
      if (avail === 0) return undefined;
      const at = r % MAILBOX_RING_BYTES;
      if (avail > MAILBOX_RING_BYTES || avail < 8) throw this.bad(`index ${w} against read index ${r}`);
      const bytes = this.view.getUint32(at, true);
      if (bytes === WRAP) {
        this.advance(r, MAILBOX_RING_BYTES - at);
        continue;
      }
      const after = this.view.getUint32(at + 4, true);
      if (((socketReceived - after) | 0) < 0) return undefined; // it waits for a socket message
      if (bytes > MAILBOX_MAX_MESSAGE || align8(8 + bytes) > avail || at + 8 + bytes > MAILBOX_RING_BYTES) {
        throw this.bad(`entry of ${bytes} bytes at ${at} with ${avail} written`);
      }
      const msg = this.ring.slice(at + 8, at + 8 + bytes);
      this.advance(r, align8(8 + bytes));
      return msg;
    }
  }

  private advance(r: number, by: number): void {
    this.mine = (r + by) >>> 0;
    Atomics.store(this.head, READ, this.mine);
  }

  /** As the reader: polling (the writer may post) or asleep (the writer uses the socket). */
  setAwake(on: boolean): void {
    Atomics.exchange(this.head, STATE, on ? AWAKE : ASLEEP);
  }

  private bad(what: string): RingProtocolError {
    return new RingProtocolError(`shared-memory mailbox from ${this.from} is corrupt: ${what}`);
  }
}
