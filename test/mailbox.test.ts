import { readdirSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { createLocalGroups, RingError, type RingGroup } from '../src/index.js';
import { sharedMemoryMap } from '../src/kernels/index.js';
import { Mailbox, MAILBOX_HEAD_BYTES, MAILBOX_MAX_MESSAGE, MAILBOX_RING_BYTES } from '../src/transport/shm/mailbox.js';
import type { WsLink } from '../src/transport/ws/link.js';
import { expected, firstDiff, input, withDeadline } from './helpers/reference.js';

/**
 * The shared-memory mailbox (transport/mailbox.ts): link messages between ranks of one host
 * travel through it, without a system call, while the receiving rank busy-polls.
 */

const region = () => new Uint8Array(MAILBOX_HEAD_BYTES + MAILBOX_RING_BYTES);
/** A writer and a reader of the same mailbox (two views, as two processes would have). */
function pair() {
  const r = region();
  return { writer: new Mailbox(r, 0, 'test writer'), reader: new Mailbox(r, 0, 'test writer'), bytes: r };
}
const message = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);

describe('Mailbox', () => {
  it('takes nothing while its reader sleeps: the writer must use the socket', () => {
    const { writer, reader } = pair();
    expect(writer.post([message(10, 1)], 10, 0)).toBe(0);
    expect(reader.take(0)).toBeUndefined();
    reader.setAwake(true);
    expect(writer.post([message(10, 1)], 10, 0)).toBe(1);
    reader.setAwake(false);
    expect(writer.post([message(10, 2)], 10, 0)).toBe(0);
    // What was posted while it was awake is still there.
    expect(Array.from(reader.take(0)!)).toEqual(Array.from(message(10, 1)));
    expect(reader.take(0)).toBeUndefined();
  });

  it('keeps order and content across many wrap-arounds, with messages made of several parts', () => {
    const { writer, reader } = pair();
    reader.setAwake(true);
    let sent = 0;
    let got = 0;
    let bytes = 0;
    for (let i = 0; bytes < 20 * MAILBOX_RING_BYTES; i++) {
      const n = [1, 7, 24, 28, 333, 4096, 16_400, MAILBOX_MAX_MESSAGE][i % 8];
      const m = message(n, i);
      const parts = n > 8 ? [m.subarray(0, 5), m.subarray(5)] : [m];
      while (writer.post(parts, n, 0) === 0) {
        // Full: the reader catches up.
        const x = reader.take(0)!;
        expect(Array.from(x)).toEqual(Array.from(message(x.byteLength, got)));
        got++;
      }
      sent++;
      bytes += n;
    }
    for (let x = reader.take(0); x; x = reader.take(0)) {
      expect(x.byteLength).toBe([1, 7, 24, 28, 333, 4096, 16_400, MAILBOX_MAX_MESSAGE][got % 8]);
      expect(Array.from(x)).toEqual(Array.from(message(x.byteLength, got)));
      got++;
    }
    expect(got).toBe(sent);
  });

  it('refuses a message when full or too large, and loses nothing', () => {
    const { writer, reader } = pair();
    reader.setAwake(true);
    expect(writer.post([message(MAILBOX_MAX_MESSAGE + 1, 0)], MAILBOX_MAX_MESSAGE + 1, 0)).toBe(0);
    let n = 0;
    while (writer.post([message(1000, n)], 1000, 0) !== 0) n++;
    expect(n).toBe(Math.floor(MAILBOX_RING_BYTES / 1008));
    for (let i = 0; i < n; i++) expect(reader.take(0)![0]).toBe(message(1000, i)[0]);
    expect(reader.take(0)).toBeUndefined();
    expect(writer.post([message(1000, 9)], 1000, 0)).toBe(1);
  });

  it('holds an entry back until the socket messages sent before it have arrived', () => {
    const { writer, reader } = pair();
    reader.setAwake(true);
    expect(writer.post([message(5, 1)], 5, 0)).toBe(1);
    expect(writer.post([message(5, 2)], 5, 3)).toBe(1);
    expect(reader.take(0)![0]).toBe(message(5, 1)[0]);
    expect(reader.take(2)).toBeUndefined();
    expect(reader.take(3)![0]).toBe(message(5, 2)[0]);
    // The counters wrap at 2^32 like the indices.
    expect(writer.post([message(5, 3)], 5, 2 ** 32 - 1)).toBe(1);
    expect(reader.take(2 ** 32 - 2)).toBeUndefined();
    expect(reader.take(2 ** 32 + 1)![0]).toBe(message(5, 3)[0]);
  });

  it('reports a corrupt mailbox as a protocol error instead of reading outside it', () => {
    for (const corrupt of ['index', 'length'] as const) {
      const { writer, reader, bytes } = pair();
      reader.setAwake(true);
      writer.post([message(40, 1)], 40, 0);
      const head = new Uint32Array(bytes.buffer, 0, MAILBOX_HEAD_BYTES / 4);
      const ring = new DataView(bytes.buffer, MAILBOX_HEAD_BYTES);
      if (corrupt === 'index') head[0] = MAILBOX_RING_BYTES * 3;
      else ring.setUint32(0, MAILBOX_RING_BYTES - 4, true);
      expect(() => reader.take(0)).toThrow(RingError);
      expect(() => reader.take(0)).toThrow(/mailbox from test writer is corrupt/);
    }
  });
});

const hasShm = sharedMemoryMap !== undefined;
type Internals = { comm: { leftLink: WsLink; rightLink: WsLink; options: { busyPollUs: number } } };
const comm = (g: RingGroup) => (g as unknown as Internals).comm;
const leftovers = () => readdirSync('/dev/shm').filter((f) => f.startsWith(`ringreduce-${process.pid}-`));

let open: RingGroup[] = [];
afterEach(async () => {
  await Promise.all(open.map((g) => g.shutdown().catch(() => {})));
  open = [];
});

describe.skipIf(!hasShm)('links through mailboxes (native addon present)', () => {
  for (const n of [2, 3]) {
    it(`N=${n}: polling ranks exchange messages through the mailbox, mixed with socket messages, all exact`, async () => {
      const gs = await createLocalGroups(n, { transport: 'ws', timeoutMs: 20_000, busyPollUs: 5000, busyPollBackoff: false, chunkBytes: 64 * 1024 });
      open.push(...gs);
      // Sizes that take every way: inline descriptors, frames through shared slots (notices and
      // frees), small frames, frames split over many chunks.
      const counts = [1, 3, 4096, 5000, 20_000, 100_003, 1];
      for (let round = 0; round < 40; round++) {
        const count = counts[round % counts.length];
        const inputs = gs.map((g) => input(Float32Array, 'sum', g.rank + round, count));
        const want = expected(Float32Array, 'sum', inputs);
        const got = await withDeadline(Promise.all(gs.map((g, r) => g.allreduce(inputs[r]))), 20_000, `round ${round}`);
        for (const [r, x] of got.entries()) expect(firstDiff(x, want), `round ${round} rank ${r}`).toBeUndefined();
        const gathered = await Promise.all(gs.map((g) => g.allgather(Int32Array.of(g.rank, round))));
        for (const x of gathered) expect(Array.from(x)).toEqual(gs.flatMap((g) => [g.rank, round]));
      }
      for (const g of gs) {
        const { leftLink, rightLink } = comm(g);
        expect(rightLink.sent.mailbox, `rank ${g.rank} to the right`).toBeGreaterThan(0);
        expect(leftLink.sent.mailbox, `rank ${g.rank} to the left (frees)`).toBeGreaterThan(0);
      }
      expect(leftovers()).toEqual([]);
    });
  }

  it('keeps order when some ranks poll and others sleep (messages switch ways mid-stream)', async () => {
    const gs = await createLocalGroups(3, { transport: 'ws', timeoutMs: 20_000, busyPollUs: 3000, busyPollBackoff: false, chunkBytes: 32 * 1024 });
    open.push(...gs);
    for (let round = 0; round < 60; round++) {
      // Rank 1 sleeps in every other stretch of rounds: its neighbours then use the socket to it.
      comm(gs[1]).options.busyPollUs = Math.floor(round / 5) % 2 === 0 ? 0 : 3000;
      const count = [2, 9000, 70_001][round % 3];
      const inputs = gs.map((g) => input(Int32Array, 'max', g.rank * 5 + round, count));
      const want = expected(Int32Array, 'max', inputs);
      const got = await withDeadline(Promise.all(gs.map((g, r) => g.allreduce(inputs[r], { op: 'max' }))), 20_000, `round ${round}`);
      for (const [r, x] of got.entries()) expect(firstDiff(x, want), `round ${round} rank ${r}`).toBeUndefined();
      const b = await Promise.all(gs.map((g) => g.broadcast(Float64Array.of(g.rank, round), { root: round % 3 })));
      for (const x of b) expect(Array.from(x)).toEqual([round % 3, round]);
    }
    // Rank 0 sends to rank 1: both ways, as rank 1 sleeps and polls by turns.
    const toOne = comm(gs[0]).rightLink.sent;
    expect(toOne.mailbox, JSON.stringify(toOne)).toBeGreaterThan(50);
    expect(toOne.socket, JSON.stringify(toOne)).toBeGreaterThan(50);
  });

  it('a rank that never polls gets everything through the socket', async () => {
    const gs = await createLocalGroups(2, { transport: 'ws', timeoutMs: 20_000, busyPollUs: 0 });
    open.push(...gs);
    for (let i = 0; i < 20; i++) {
      const got = await Promise.all(gs.map((g) => g.allreduce(Float32Array.of(g.rank + i))));
      for (const x of got) expect(x[0]).toBe(2 * i + 1);
    }
    for (const g of gs) expect(comm(g).rightLink.sent.mailbox).toBe(0);
  });
});
