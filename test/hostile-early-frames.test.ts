import { afterEach, describe, expect, it } from 'vitest';
import { createLocalGroups, RingError, type RingGroup } from '../src/index.js';
import { sharedMemoryMap } from '../src/kernels/index.js';
import { encodeControl, encodeData } from '../src/transport/wire.js';
import { ringWithImpostor } from './helpers/impostor.js';
import { expected, firstDiff, input, withDeadline } from './helpers/reference.js';

/**
 * Issue 14, row 10: frames of an operation a rank has not started were held without limit (the
 * audit sent 3.3 GB in 9 s; RSS 59 -> 3,401 MB). Now they are held within a byte budget
 * (options.earlyBytes, RINGREDUCE_EARLY_BYTES, 64 MiB by default). Past it a rank stops reading
 * from its left neighbour (the sender waits: backpressure) while nothing it runs needs the left's
 * data; if it does need it, more early frames fail the ring with RING_ERR_PROTOCOL naming the
 * neighbour. Ranks that run ahead legitimately — by a few operations of tensors larger than the
 * budget, all at once or one after the other — still get exact results. Times are measured with
 * one clock (Date.now) and bounded generously for a loaded 2-core machine.
 */
type Internals = { comm: { early: { heldBytes: number; pauses: number; paused: boolean }; error: RingError | undefined } };
const comm = (g: RingGroup) => (g as unknown as Internals).comm;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = 1 << 20;

let open: RingGroup[] = [];
afterEach(async () => {
  await Promise.all(open.map((g) => g.shutdown().catch(() => {})));
  open = [];
});

describe('a token holder floods frames of an operation nobody started', () => {
  it('an idle rank holds at most its budget and stops reading (the sender waits); once it runs an operation that needs the left, more is RING_ERR_PROTOCOL naming the sender', async () => {
    const CHUNK = 64 * 1024;
    const BUDGET = 2 * MiB;
    const logs: string[] = [];
    const ring = await ringWithImpostor(logs, { chunkBytes: CHUNK, earlyBytes: BUDGET, timeoutMs: 30_000 });
    try {
      const ws = ring.impostor.toRank0;
      const rank0 = comm(ring.groups[0]);
      ws.send(encodeControl({ t: 'desc', seq: 5, origin: 2, d: { kind: 'allreduce', op: 'sum', dtype: 1, count: 1 << 30, name: 'flood', root: -1, compression: 'none' } }));
      const payload = Buffer.alloc(CHUNK, 1);
      let chunk = 0;
      let sent = 0;
      const t0 = Date.now();
      let lastProgress = t0;
      let lastQueued = 0;
      // Push up to 64 MiB (32 budgets), keeping at most 1 MiB queued here; stop once rank 0 has
      // paused and the queue has not moved for a second since (it reads no more), or after 30 s.
      while (sent < 64 * MiB && Date.now() - t0 < 30_000) {
        if (ws.bufferedAmount > MiB) {
          if (ws.bufferedAmount !== lastQueued || !rank0.early.paused) (lastQueued = ws.bufferedAmount), (lastProgress = Date.now());
          if (Date.now() - lastProgress > 1000) break;
          await sleep(5);
          continue;
        }
        ws.send(encodeData({ seq: 5, step: 0, chunk: chunk++, codec: 0, scale: 1 }, payload));
        sent += CHUNK;
        lastProgress = Date.now();
      }
      const held = rank0.early.heldBytes;
      console.log(`flooded: ${(sent / MiB).toFixed(1)} MiB sent in ${Date.now() - t0} ms, ${(held / MiB).toFixed(2)} MiB held by rank 0, ${(ws.bufferedAmount / MiB).toFixed(2)} MiB waiting at the sender`);
      // The sender waits: most of what it would send never left it (kernel socket buffers take a few MiB).
      expect(sent).toBeLessThan(32 * MiB);
      expect(ws.bufferedAmount).toBeGreaterThan(0);
      expect(rank0.early.paused).toBe(true);
      // Rank 0 holds its budget, and at most the few frames ws had read already besides.
      expect(held).toBeGreaterThan(BUDGET);
      expect(held).toBeLessThanOrEqual(BUDGET + 16 * CHUNK);
      expect(rank0.error).toBeUndefined();
      expect(comm(ring.groups[1]).error).toBeUndefined();

      // Now rank 0 runs an all-reduce that needs rank 2's data: it must read on, and the flood is an error.
      const ops = ring.groups.map((g) => g.allreduce(new Float32Array(64), { name: 'victim' }));
      const settled = await withDeadline(Promise.allSettled(ops), 20_000, 'the flood while rank 0 needs the left');
      const e = (settled[0] as PromiseRejectedResult).reason as RingError;
      expect(e).toBeInstanceOf(RingError);
      expect(e.code, e.message).toBe('RING_ERR_PROTOCOL');
      expect(e.details).toMatchObject({ rank: 0, ranks: [2] });
      expect(e.message).toMatch(
        /^rank 0: protocol error: rank 2 \(left neighbour\) sent \d+ bytes of frames for operations this rank has not started \(#5\.\.#5\), past the budget of 2097152 bytes, while allreduce #1 'victim' still waits for its data \(raise options\.earlyBytes/,
      );
      const o = (settled[1] as PromiseRejectedResult).reason as RingError;
      expect(o.code, o.message).toBe('RING_ERR_PROTOCOL');
      expect(o.message).toMatch(/aborted because rank 0 failed: .*rank 2/);
    } finally {
      await ring.close();
    }
  }, 90_000);
});

describe('ranks that run ahead legitimately still get exact results', () => {
  const hasShm = sharedMemoryMap !== undefined;

  async function groups(n: number, extra: object) {
    const gs = await createLocalGroups(n, { timeoutMs: 30_000, chunkBytes: 64 * 1024, ...extra });
    open.push(...gs);
    return gs;
  }

  /** Every rank issues `ops` all-reduces of `count` float32 at once; rank 1 `lateMs` after the others. */
  async function concurrent(gs: RingGroup[], ops: number, count: number, lateMs: number, round: number) {
    const inputs = Array.from({ length: ops }, (_, k) => gs.map((g) => input(Float32Array, 'sum', g.rank + k + round, count)));
    const got = await withDeadline(
      Promise.all(gs.map(async (g, r) => (r === 1 && (await sleep(lateMs)), Promise.all(inputs.map((ins) => g.allreduce(ins[r])))))),
      60_000,
      `round ${round}`,
    );
    for (let k = 0; k < ops; k++) {
      const want = expected(Float32Array, 'sum', inputs[k]);
      for (const [r, outs] of got.entries()) expect(firstDiff(outs[k], want), `round ${round} op ${k} rank ${r}`).toBeUndefined();
    }
  }

  it.each([
    ['WebSockets', { transport: 'ws', sharedMemory: false }],
    ['in-process links', { transport: 'memory' }],
  ] as const)('%s: 4 concurrent all-reduces of 4 MiB each, one rank 300 ms late, a 1 MiB budget: the others pause and resume, exact (3 rounds)', async (_name, transport) => {
    const gs = await groups(3, { ...transport, earlyBytes: MiB });
    for (let round = 0; round < 3; round++) await concurrent(gs, 4, MiB, 300, round);
    const late = comm(gs[1]).early;
    console.log(`${_name}: rank 1 paused reading ${late.pauses} times`);
    expect(late.pauses).toBeGreaterThan(0);
    expect(late.heldBytes).toBe(0);
    for (const g of gs) expect(comm(g).error).toBeUndefined();
  }, 120_000);

  it('one after the other (each rank awaits each all-reduce), 16 MiB each, one rank 300 ms late before each: exact (4 rounds)', async () => {
    const gs = await groups(3, { transport: 'ws', sharedMemory: false, earlyBytes: MiB });
    const count = 4 * MiB;
    for (let round = 0; round < 4; round++) {
      const inputs = gs.map((g) => input(Float32Array, 'sum', g.rank + round, count));
      const want = expected(Float32Array, 'sum', inputs);
      const got = await withDeadline(Promise.all(gs.map(async (g, r) => (r === 1 && (await sleep(300)), g.allreduce(inputs[r])))), 60_000, `round ${round}`);
      for (const [r, x] of got.entries()) expect(firstDiff(x, want), `round ${round} rank ${r}`).toBeUndefined();
    }
    expect(comm(gs[1]).early.pauses).toBeGreaterThan(0);
  }, 120_000);

  it('with the default budget (64 MiB): 3 concurrent all-reduces of 16 MiB each, one rank 300 ms late, never paused or failed; through shared memory frames keep their slots instead', async () => {
    for (const shm of hasShm ? [false, true] : [false]) {
      const gs = await groups(3, { transport: 'ws', sharedMemory: shm, chunkBytes: 1 << 20 });
      await concurrent(gs, 3, 4 * MiB, 300, 0);
      for (const g of gs) expect(comm(g).error).toBeUndefined();
      for (const g of gs) expect(comm(g).early.pauses, `rank ${g.rank}, shared memory ${shm}`).toBe(0);
      await Promise.all(gs.map((g) => g.shutdown()));
      open = [];
    }
  }, 120_000);

  it('the limit, stated: a left neighbour that runs two all-reduces at once while this rank runs them one by one needs a budget for the second one\'s early frames (the error says so); the default covers 2 x 16 MiB', async () => {
    const run = async (gs: RingGroup[], count: number) => {
      const a = gs.map((g) => input(Int32Array, 'sum', g.rank, count));
      const b = gs.map((g) => input(Int32Array, 'sum', g.rank + 7, count));
      return withDeadline(
        Promise.allSettled(
          gs.map(async (g, r) => {
            if (r === 0) return Promise.all([g.allreduce(a[r]), g.allreduce(b[r])]);
            const x = await g.allreduce(a[r]);
            await sleep(50);
            return [x, await g.allreduce(b[r])];
          }),
        ),
        60_000,
        'two at once',
      );
    };
    const small = await groups(3, { transport: 'ws', sharedMemory: false, earlyBytes: MiB });
    const failed = await run(small, 2 * MiB);
    const e = failed.map((s) => (s.status === 'rejected' ? (s.reason as RingError) : undefined)).find((x) => x && !/aborted because/.test(x.message));
    expect(e?.code, String(e?.message)).toBe('RING_ERR_PROTOCOL');
    expect(e?.message).toMatch(/rank 0 \(left neighbour\) sent \d+ bytes of frames for operations this rank has not started .*raise options\.earlyBytes \/ RINGREDUCE_EARLY_BYTES/);
    await Promise.all(small.map((g) => g.shutdown().catch(() => {})));
    open = [];
    const gs = await groups(3, { transport: 'ws', sharedMemory: false, chunkBytes: 1 << 20 });
    const ok = await run(gs, 4 * MiB);
    for (const s of ok) expect(s.status, s.status === 'rejected' ? String(s.reason) : '').toBe('fulfilled');
  }, 120_000);
});
