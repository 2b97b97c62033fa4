import { afterEach, describe, expect, it } from 'vitest';
import { createLocalGroups, RingError, type RingGroup } from '../src/index.js';
import { EAGER_BYTES, EagerAllreduce } from '../src/collectives/eager.js';
import { dtypeOf } from '../src/dtypes.js';
import { expected, firstDiff, input, OPS, sameBytes, withDeadline } from './helpers/reference.js';

/**
 * Small all-reduces carry each rank's input inside its descriptor (collectives/eager.ts) instead
 * of ring frames. These tests pin the boundary (EAGER_BYTES, capped by chunkBytes), exactness and
 * bit-identical results on both sides of it, and what happens when ranks straddle it or a peer
 * sends a bad inline payload.
 */

let open: RingGroup[] = [];
afterEach(async () => {
  await Promise.all(open.map((g) => g.shutdown().catch(() => {})));
  open = [];
});

async function groups(n: number, transport: 'memory' | 'ws', extra: object = {}) {
  const gs = await createLocalGroups(n, { transport, timeoutMs: 20_000, ...extra });
  open.push(...gs);
  return gs;
}

describe.each(['memory', 'ws'] as const)('small all-reduce over %s links', (transport) => {
  it('is exact and bit-identical on every rank at and just past the eager boundary, for every op and in place', async () => {
    const gs = await groups(3, transport);
    const atLimit = EAGER_BYTES / 4;
    for (const ctor of [Float32Array, Int32Array]) {
      for (const count of [1, atLimit - 1, atLimit, atLimit + 1]) {
        for (const op of OPS) {
          const inputs = gs.map((g) => input(ctor, op, g.rank, count));
          const want = expected(ctor, op, inputs);
          const got = await withDeadline(
            Promise.all(gs.map((g, r) => g.allreduce(inputs[r].slice(), { op, inPlace: r === 1 }))),
            10_000,
            `${op} ${count}`,
          );
          for (const [r, x] of got.entries()) {
            expect(firstDiff(x, want), `rank ${r} ${ctor.name} ${op} count ${count}`).toBeUndefined();
            expect(sameBytes(x, got[0])).toBe(true);
          }
        }
      }
    }
  });

  it('with compression: small inputs are reduced exactly (nothing is rounded to 16 bits)', async () => {
    const gs = await groups(2, transport);
    // 1/3 is not representable in fp16 or bf16; the eager path must not round it.
    const xs = gs.map((g) => Float32Array.from({ length: 64 }, (_, i) => (i + 1) / 3 + g.rank));
    for (const compression of ['fp16', 'bf16'] as const) {
      const got = await Promise.all(gs.map((g, r) => g.allreduce(xs[r], { compression })));
      const want = xs[0].map((v, i) => Math.fround(v + xs[1][i]));
      for (const x of got) expect(firstDiff(x, want)).toBeUndefined();
    }
  });

  it('ranks straddling the boundary (eager on one, ring on the other) get the count mismatch, and the ring stays usable', async () => {
    const limit = 64; // chunkBytes caps the eager size: 16 float32 ride inline, 17 do not.
    const gs = await groups(2, transport, { chunkBytes: limit });
    const settled = await withDeadline(
      Promise.allSettled(gs.map((g) => g.allreduce(new Float32Array(g.rank === 0 ? limit / 4 : limit / 4 + 1)))),
      10_000,
      'straddle',
    );
    for (const s of settled) {
      expect(s.status).toBe('rejected');
      const e = (s as PromiseRejectedResult).reason as RingError;
      expect(e.code).toBe('RING_ERR_MISMATCH');
      expect(e.message).toMatch(/element count \(rank 0: 16; rank 1: 17\)/);
    }
    const ok = await withDeadline(Promise.all(gs.map((g) => g.allreduce(Float32Array.of(g.rank + 1)))), 10_000, 'after');
    expect(ok.map((x) => x[0])).toEqual([3, 3]);
  });

  it('a descriptor whose inline payload has the wrong size is a protocol error naming the rank that sent it, on every rank', async () => {
    const gs = await groups(3, transport);
    class Short extends EagerAllreduce {
      override inline(): Uint8Array {
        return super.inline().subarray(4);
      }
    }
    const x = new Float32Array(8);
    const runs = gs.map((g) => {
      const comm = (g as unknown as { comm: { run(d: object, c: object): Promise<unknown> } }).comm;
      const desc = { kind: 'allreduce', op: 'sum', dtype: dtypeOf(x)!.code, count: 8, name: '', root: -1, compression: 'none' };
      const Coll = g.rank === 2 ? Short : EagerAllreduce;
      return comm.run(desc, new Coll(x.slice(), dtypeOf(x)!, 'sum'));
    });
    const settled = await withDeadline(Promise.allSettled(runs), 10_000, 'bad inline');
    for (const s of settled) {
      expect(s.status).toBe('rejected');
      const e = (s as PromiseRejectedResult).reason as RingError;
      expect(e.code).toBe('RING_ERR_PROTOCOL');
      expect(e.message).toMatch(/rank 2 sent 28 bytes with its descriptor, expected 32/);
    }
  });
});

describe('busyPollUs', () => {
  it('keeps results exact, and the polling loop stops once nothing is pending (the process can sleep and exit)', async () => {
    const gs = await groups(3, 'ws', { busyPollUs: 2000, busyPollBackoff: false });
    const comm = (g: RingGroup) => (g as unknown as { comm: { poller: { polling: boolean } } }).comm.poller;
    for (const count of [1, 5000, 300_000]) {
      const inputs = gs.map((g) => input(Float32Array, 'sum', g.rank, count));
      const want = expected(Float32Array, 'sum', inputs);
      const pending = gs.map((g, r) => g.allreduce(inputs[r]));
      // Starting an operation starts polling at once.
      expect(gs.every((g) => comm(g).polling)).toBe(true);
      const got = await withDeadline(Promise.all(pending), 10_000, `count ${count}`);
      for (const x of got) expect(firstDiff(x, want)).toBeUndefined();
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      for (const g of gs) expect(comm(g).polling).toBe(false);
    }
  });

  it('polls for at most busyPollUs after the last message while a peer is silent', async () => {
    const gs = await groups(2, 'ws', { busyPollUs: 1000, busyPollBackoff: false });
    const comm = (g: RingGroup) => (g as unknown as { comm: { poller: { polling: boolean } } }).comm.poller;
    const lonely = gs[0].allreduce(Float32Array.of(1)); // rank 1 has not called it yet
    await new Promise((r) => setTimeout(r, 50));
    expect(comm(gs[0]).polling).toBe(false);
    const [a] = await Promise.all([lonely, gs[1].allreduce(Float32Array.of(2))]);
    expect(a[0]).toBe(3);
  });
});
