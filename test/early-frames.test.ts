import { afterEach, describe, expect, it } from 'vitest';
import { createLocalGroups, type RingGroup } from '../src/index.js';
import { sharedMemoryMap } from '../src/kernels/index.js';
import { expected, firstDiff, input, withDeadline } from './helpers/reference.js';

/**
 * Frames that arrive before this rank can apply them (it has not started the operation yet), and
 * ranks that finish and shut down while a neighbour still works.
 */

const hasShm = sharedMemoryMap !== undefined;
type Internals = { comm: { earlyCopiedBytes: number } };
const comm = (g: RingGroup) => (g as unknown as Internals).comm;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let open: RingGroup[] = [];
afterEach(async () => {
  await Promise.all(open.map((g) => g.shutdown().catch(() => {})));
  open = [];
});

async function groups(n: number, extra: object = {}) {
  const gs = await createLocalGroups(n, { transport: 'ws', timeoutMs: 20_000, chunkBytes: 64 * 1024, ...extra });
  open.push(...gs);
  return gs;
}

describe.skipIf(!hasShm)('early frames in shared-memory slots', () => {
  it('a rank that starts late keeps its left neighbour’s slots instead of copying what arrives early', async () => {
    for (const shm of [true, false]) {
      const gs = await groups(3, { sharedMemory: shm });
      const count = 1_000_000;
      for (let round = 0; round < 3; round++) {
        const inputs = gs.map((g) => input(Float32Array, 'sum', g.rank + round, count));
        const want = expected(Float32Array, 'sum', inputs);
        // Rank 1 calls 60 ms after the others: rank 0 (its left) has long started sending.
        const got = await withDeadline(
          Promise.all(gs.map(async (g, r) => (r === 1 && (await sleep(60)), g.allreduce(inputs[r])))),
          20_000,
          `round ${round}`,
        );
        for (const [r, x] of got.entries()) expect(firstDiff(x, want), `round ${round} rank ${r}`).toBeUndefined();
      }
      // Through the socket every early frame must be copied; through slots none is.
      if (shm) expect(comm(gs[1]).earlyCopiedBytes).toBe(0);
      else expect(comm(gs[1]).earlyCopiedBytes).toBeGreaterThan(3 * 64 * 1024);
      await Promise.all(gs.map((g) => g.shutdown()));
      open = [];
    }
  });

  it('no hang when the left neighbour runs two operations at once while this rank runs them one after the other', async () => {
    const gs = await groups(3, { chunkBytes: 32 * 1024 });
    const count = 600_000;
    const a = gs.map((g) => input(Int32Array, 'sum', g.rank, count));
    const b = gs.map((g) => input(Int32Array, 'sum', g.rank + 7, count));
    const run = async (g: RingGroup, r: number) => {
      if (r === 0) return Promise.all([g.allreduce(a[r]), g.allreduce(b[r])]);
      // The others wait for the first before starting the second: rank 0's frames of the second
      // arrive at rank 1 while its first still needs rank 0's later frames, queued behind them.
      const x = await g.allreduce(a[r]);
      await sleep(30);
      return [x, await g.allreduce(b[r])];
    };
    for (let round = 0; round < 3; round++) {
      const got = await withDeadline(Promise.all(gs.map(run)), 20_000, `round ${round}`);
      for (const [r, [x, y]] of got.entries()) {
        expect(firstDiff(x, expected(Int32Array, 'sum', a)), `rank ${r} first`).toBeUndefined();
        expect(firstDiff(y, expected(Int32Array, 'sum', b)), `rank ${r} second`).toBeUndefined();
      }
    }
  });
});

describe('ranks that shut down as soon as they are done', () => {
  it('do not fail a neighbour that is still receiving its last frames (N=4, 20 jobs)', async () => {
    // A rank ends an all-gather once it has what it passes on; its left neighbour may still await
    // its own last frames from further left. The rank's goodbye must not fail that neighbour.
    for (let job = 0; job < 20; job++) {
      const gs = await createLocalGroups(4, { transport: 'ws', timeoutMs: 20_000, chunkBytes: 16 * 1024 });
      const inputs = gs.map((g) => input(Float32Array, 'sum', g.rank + job, 200_000));
      const want = expected(Float32Array, 'sum', inputs);
      const results = await withDeadline(
        Promise.allSettled(
          gs.map(async (g, r) => {
            const x = await g.allreduce(inputs[r]);
            await g.shutdown();
            return x;
          }),
        ),
        20_000,
        `job ${job}`,
      );
      for (const [r, res] of results.entries()) {
        expect(res.status, `job ${job} rank ${r}: ${res.status === 'rejected' ? String(res.reason) : ''}`).toBe('fulfilled');
        if (res.status === 'fulfilled') expect(firstDiff(res.value, want)).toBeUndefined();
      }
    }
  });

  it('a rank whose left neighbour leaves before sending what it needs still fails, naming it', async () => {
    const gs = await createLocalGroups(3, { transport: 'ws', timeoutMs: 20_000 });
    open.push(...gs);
    await gs[0].shutdown();
    const err = await gs[1].allreduce(Float32Array.of(1)).catch((e: Error) => e);
    expect(String(err)).toMatch(/rank 0 has already called shutdown\(\)|rank 0 \(left neighbour\) called shutdown\(\)/);
  });
});
