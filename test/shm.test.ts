import { existsSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { createLocalGroups, RingError, type RingGroup } from '../src/index.js';
import { sharedMemoryMap } from '../src/kernels/index.js';
import { acceptOffer, createRegion, encodeShmData, sweepStaleRegions, unlinkQuietly } from '../src/transport/shm/region.js';
import type { WsLink } from '../src/transport/ws/link.js';
import { expected, firstDiff, input, OPS, sameBytes, withDeadline } from './helpers/reference.js';

/**
 * Same-host links move payloads through shared memory (transport/shm.ts) when the native addon
 * is there. Local 'ws' groups form their ring through the real rendezvous, so they take that path.
 */

const hasShm = sharedMemoryMap !== undefined;

let open: RingGroup[] = [];
afterEach(async () => {
  await Promise.all(open.map((g) => g.shutdown().catch(() => {})));
  open = [];
});

async function groups(n: number, extra: object = {}) {
  const gs = await createLocalGroups(n, { transport: 'ws', timeoutMs: 20_000, ...extra });
  open.push(...gs);
  return gs;
}

type Internals = { comm: { leftLink: WsLink; rightLink: WsLink } };
const links = (g: RingGroup) => (g as unknown as Internals).comm;
const leftovers = () => readdirSync('/dev/shm').filter((f) => f.startsWith(`ringreduce-${process.pid}-`));
/** A region (this host's /dev/shm has room for these small ones). */
function region(slots: number, payloadBytes: number) {
  const r = createRegion(slots, payloadBytes);
  if (typeof r === 'string') throw new Error(r);
  return r;
}

describe.skipIf(!hasShm)('shared-memory links (native addon present)', () => {
  it('are used between ranks of one host, leave nothing in /dev/shm, and give exact, bit-identical results for every op', async () => {
    const gs = await groups(3, { chunkBytes: 256 * 1024 });
    for (const g of gs) {
      expect(links(g).rightLink.sharedMemory).toBe(true);
      expect(links(g).leftLink.sharedMemory).toBe(true);
    }
    expect(leftovers()).toEqual([]);
    for (const ctor of [Float32Array, Int32Array]) {
      for (const op of OPS) {
        const count = 1_000_003;
        const inputs = gs.map((g) => input(ctor, op, g.rank, count));
        const want = expected(ctor, op, inputs);
        const got = await withDeadline(Promise.all(gs.map((g, r) => g.allreduce(inputs[r], { op }))), 20_000, `${ctor.name} ${op}`);
        for (const [r, x] of got.entries()) {
          expect(firstDiff(x, want), `rank ${r} ${ctor.name} ${op}`).toBeUndefined();
          expect(sameBytes(x, got[0])).toBe(true);
        }
      }
    }
    // The other collectives and compressed all-reduce go through the same slots.
    const big = gs.map((g) => Float32Array.from({ length: 300_001 }, (_, i) => (i % 50) + g.rank));
    const gathered = await Promise.all(gs.map((g, r) => g.allgather(big[r])));
    for (const x of gathered) expect(sameBytes(x, gathered[0])).toBe(true);
    expect(Array.from(gathered[0].subarray(300_001, 300_004))).toEqual([1, 2, 3]);
    const b = await Promise.all(gs.map((g, r) => g.broadcast(big[r], { root: 2 })));
    for (const x of b) expect(firstDiff(x, big[2])).toBeUndefined();
    const fp16 = await Promise.all(gs.map((g, r) => g.allreduce(big[r], { compression: 'fp16' })));
    const sum = big[0].map((_, i) => big[0][i] + big[1][i] + big[2][i]);
    for (const x of fp16) expect(firstDiff(x, sum)).toBeUndefined(); // small integers: exact in fp16
  });

  it('frames keep their order when they wait for a slot: a small tail chunk (sent on the socket) never overtakes', async () => {
    // A frame's send completes when its notice is written, long before the receiver hands the slot
    // back, so later frames queue for slots; the small tail must queue behind them.
    const gs = await groups(4, { chunkBytes: 64 * 1024 });
    const count = 1_000_003; // 61 whole 64 KiB chunks, then a 2316-byte one below the shared-memory minimum
    const x = Float32Array.from({ length: count }, (_, i) => i % 1000);
    for (let rep = 0; rep < 3; rep++) {
      for (const root of [0, 1, 2, 3]) {
        const got = await withDeadline(Promise.all(gs.map((g) => g.broadcast(g.rank === root ? x : new Float32Array(count), { root }))), 10_000, `root ${root}`);
        for (const y of got) expect(firstDiff(y, x)).toBeUndefined();
      }
    }
    const inputs = gs.map((g) => input(Float32Array, 'sum', g.rank, 3 * count));
    const sums = await withDeadline(Promise.all(gs.map((g, r) => g.allreduce(inputs[r]))), 10_000, 'allreduce');
    for (const y of sums) expect(firstDiff(y, expected(Float32Array, 'sum', inputs))).toBeUndefined();
  });

  it('sharedMemory: false keeps payloads on the socket, with the same results', async () => {
    const gs = await groups(2, { sharedMemory: false });
    for (const g of gs) expect(links(g).rightLink.sharedMemory).toBe(false);
    const inputs = gs.map((g) => input(Float32Array, 'sum', g.rank, 500_000));
    const got = await Promise.all(gs.map((g, r) => g.allreduce(inputs[r])));
    for (const x of got) expect(firstDiff(x, expected(Float32Array, 'sum', inputs))).toBeUndefined();
  });

  it('a notice for a slot outside the region is a protocol error naming the sender, on every rank', async () => {
    const gs = await groups(3);
    const pending = gs.map((g) => g.allreduce(new Float32Array(1 << 20)));
    // Rank 0 (through its right link) tells rank 1 that a frame waits in slot 999.
    const ws = (links(gs[0]).rightLink as unknown as { ws: { send(b: Uint8Array): void } }).ws;
    ws.send(encodeShmData({ seq: 0, step: 0, chunk: 0, codec: 0, scale: 1 }, 64, 999));
    const settled = await withDeadline(Promise.allSettled(pending), 10_000, 'forged notice');
    const errs = settled.map((s) => (s.status === 'rejected' ? (s.reason as RingError) : undefined));
    expect(errs[1]?.code).toBe('RING_ERR_PROTOCOL');
    expect(errs[1]?.message).toMatch(/rank 0 .*out of its region \(slot 999/);
    for (const e of errs) expect(e).toBeInstanceOf(RingError);
  });
});

describe.skipIf(!hasShm)('shared-memory offers', () => {
  it('are accepted only where the very same memory is visible (the nonce matches)', () => {
    const { offer, path } = region(4, 1024);
    try {
      const ok = acceptOffer(offer, 1024, true, 'rank 9');
      expect(typeof ok).toBe('object');
      const forged = Buffer.from(offer);
      forged[12] ^= 0xff; // another nonce: as if the path were another file on another host
      expect(acceptOffer(forged, 1024, true, 'rank 9')).toMatch(/not on this host/);
      expect(acceptOffer(offer, 1024, false, 'rank 9')).toMatch(/disabled on this rank/);
    } finally {
      unlinkQuietly(path);
    }
    expect(acceptOffer(offer, 1024, true, 'rank 9')).toMatch(/cannot map the peer's region/); // unlinked now
  });

  it('left behind by a killed process (dead pid, over a minute old) are swept; live or fresh ones are not', () => {
    const dead = '/dev/shm/ringreduce-2147483646-00112233445566ff'; // no such pid
    const fresh = '/dev/shm/ringreduce-2147483646-aabbccddeeff0011';
    const live = `/dev/shm/ringreduce-${process.pid}-0123456789abcdef`;
    try {
      for (const f of [dead, fresh, live]) writeFileSync(f, 'x', { mode: 0o600 });
      const old = new Date(Date.now() - 120_000);
      utimesSync(dead, old, old);
      utimesSync(live, old, old);
      const removed = sweepStaleRegions();
      expect(removed).toContain(dead);
      expect(existsSync(dead)).toBe(false);
      expect(existsSync(fresh)).toBe(true);
      expect(existsSync(live)).toBe(true);
    } finally {
      for (const f of [dead, fresh, live]) unlinkQuietly(f);
    }
  });

  it('with a path outside /dev/shm/ringreduce-*, or a bad geometry, are protocol errors naming the peer', () => {
    const { offer, path } = region(2, 64);
    unlinkQuietly(path);
    const other = Buffer.concat([offer.subarray(0, 28), Buffer.from('/etc/passwd')]);
    expect(() => acceptOffer(other, 64, true, 'rank 4')).toThrow(/offer from rank 4 names an unexpected path/);
    const huge = Buffer.from(offer);
    huge.writeUInt32LE(1 << 20, 8);
    expect(() => acceptOffer(huge, 64, true, 'rank 4')).toThrow(/offer from rank 4 has a bad geometry/);
    expect(() => acceptOffer(offer.subarray(0, 10), 64, true, 'rank 4')).toThrow(/truncated shared-memory offer from rank 4/);
  });
});
