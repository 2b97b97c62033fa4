import { afterEach, describe, expect, it } from 'vitest';
import { createLocalGroups, RingError, type RingGroup } from '../src/index.js';
import type { NumericArray } from '../src/dtypes.js';
import { smallOpsRoute } from '../src/collectives/comm/direct-route.js';
import { tuning } from '../src/env.js';
import { resolveOptions } from '../src/options.js';
import { checkTable, type RankRecord } from '../src/rendezvous/records.js';
import { expected, firstDiff, input, OPS, sameBytes, withDeadline } from './helpers/reference.js';

/**
 * Small operations on the direct route (src/collectives/comm/direct-route.ts): descriptors and
 * inline inputs gathered over links straight to other ranks in ceil(log_R N) rounds instead of
 * the ring's N-1 hops. Radix 8 (the default: one round up to N = 8) and radix 2 (several rounds,
 * blocks relayed), in-process over memory links and over real WebSockets: results exact and
 * bit-identical, barriers, operations queued back to back mixing both routes, and ranks that
 * disagree — also about the route itself (one eager, one ring) — all fail with the same typed
 * mismatch on every rank and leave the communicator usable. Hostile input on the route and lost
 * peers are in test/small-ops-hostile.test.ts.
 */

let open: RingGroup[] = [];
afterEach(async () => {
  await Promise.all(open.map((g) => g.shutdown().catch(() => {})));
  open = [];
});

async function groups(n: number, transport: 'memory' | 'ws', radix: number, extra: object = {}): Promise<RingGroup[]> {
  const gs = await createLocalGroups(n, { transport, timeoutMs: 20_000, smallOps: 'direct', smallOpsRadix: radix, ...extra });
  open.push(...gs);
  return gs;
}

const directSent = (g: RingGroup) => (g as unknown as { comm: { directSent: number | undefined } }).comm.directSent;

/** Counts the descriptors `g` sends around the ring from now on. */
function ringDescriptors(g: RingGroup): () => number {
  const link = (g as unknown as { comm: { rightLink: { sendControl(m: { t: string }, done?: unknown): void } } }).comm.rightLink;
  let n = 0;
  const send = link.sendControl.bind(link);
  link.sendControl = (m, done) => {
    if (m.t === 'desc') n++;
    send(m, done);
  };
  return () => n;
}

async function checkAllreduce(gs: RingGroup[], ctor: any, op: (typeof OPS)[number], count: number) {
  const ins = gs.map((g) => input(ctor, op, g.rank, count));
  const outs = await withDeadline(Promise.all(gs.map((g, r) => g.allreduce(ins[r], { op }))), 10_000, `${ctor.name} ${op} ${count}`);
  const want = expected(ctor, op, ins);
  for (const [r, o] of outs.entries()) {
    expect(firstDiff(o, want), `rank ${r} ${ctor.name} ${op} N=${gs.length} count=${count}`).toBeUndefined();
    expect(sameBytes(o, outs[0])).toBe(true);
  }
}

/** Every rank rejects with RING_ERR_MISMATCH, the same message past "rank r: <its op>: ", mentioning `what`. */
async function expectMismatch(runs: Promise<unknown>[], what: RegExp) {
  const settled = await withDeadline(Promise.allSettled(runs), 10_000, 'mismatch');
  const texts = settled.map((s, r) => {
    expect(s.status, `rank ${r}`).toBe('rejected');
    const e = (s as PromiseRejectedResult).reason as RingError;
    expect(e, String(e)).toBeInstanceOf(RingError);
    expect(e.code, e.message).toBe('RING_ERR_MISMATCH');
    expect(e.message, e.message).toMatch(what);
    // Each rank names the operation by its own descriptor ("barrier #3" where it called barrier).
    return e.message.replace(/^rank \d+: [a-z]+ #\d+: /, '');
  });
  expect(new Set(texts).size, texts.join('\n')).toBe(1);
}

const sizes = (transport: string) => (transport === 'memory' ? [2, 3, 4, 5, 6, 7] : [2, 3, 5, 7]);

describe.each(['memory', 'ws'] as const)('direct route over %s links', (transport) => {
  describe.each([8, 2])('radix %i', (radix) => {
    it.each(sizes(transport))('N=%i: exact, bit-identical all-reduces of every op and dtype, and barriers, without ring descriptors', async (n) => {
      const gs = await groups(n, transport, radix);
      const ring = gs.map(ringDescriptors);
      for (const op of OPS) await checkAllreduce(gs, Float32Array, op, 7);
      await checkAllreduce(gs, Int32Array, 'sum', 1);
      await checkAllreduce(gs, Float64Array, 'average', 3);
      // The largest input that rides inline (16 KiB).
      await checkAllreduce(gs, Float32Array, 'sum', 4096);
      await withDeadline(Promise.all(gs.map((g) => g.barrier())), 10_000, 'barrier');
      // All-to-all: counts may differ between ranks (its agreement is frameless everywhere).
      const a2a = await withDeadline(Promise.all(gs.map((g) => g.alltoall(Int32Array.from({ length: n * (g.rank + 1) }, (_, i) => i)))), 10_000, 'alltoall');
      // Rank j sends j+1 elements to each rank: rank r gets [r(j+1), (r+1)(j+1)) of j's 0, 1, 2, ...
      for (const [r, t] of a2a.entries()) {
        expect(Array.from(t.splits)).toEqual(Array.from({ length: n }, (_, j) => j + 1));
        expect(Array.from(t.data)).toEqual(Array.from({ length: n }, (_, j) => Array.from({ length: j + 1 }, (_, i) => r * (j + 1) + i)).flat());
      }
      // Each rank sent its blocks over direct links: (N-1) blocks per operation in all, whatever
      // the rounds; around the ring, nothing.
      const sent = gs.map(directSent);
      expect(sent.reduce((a, b) => a! + b!, 0)).toBe((5 + 5) * n * (n - 1) + (transport === 'ws' ? n * (n - 1) : 0));
      expect(ring.map((c) => c())).toEqual(gs.map(() => 0));
    });
  });

  it('operations queued back to back without awaiting, mixing the routes (small, large, barrier, all-to-all)', async () => {
    const n = 5;
    const gs = await groups(n, transport, 2);
    const all = await withDeadline(
      Promise.all(
        gs.map((g) =>
          Promise.all([
            g.allreduce(Float64Array.of(1, g.rank)),
            g.allreduce(Float32Array.from({ length: 20_000 }, () => g.rank)),
            g.barrier(),
            g.alltoall(Int32Array.from({ length: n }, (_, j) => 10 * g.rank + j)),
            g.allreduce(Int32Array.of(g.rank), { op: 'max' }),
          ]),
        ),
      ),
      10_000,
      'queued',
    );
    for (const [r, [a, big, , t, m]] of all.entries()) {
      expect(Array.from(a as NumericArray)).toEqual([n, (n * (n - 1)) / 2]);
      expect((big as Float32Array).every((v) => v === (n * (n - 1)) / 2)).toBe(true);
      expect(Array.from((t as { data: Int32Array }).data)).toEqual(Array.from({ length: n }, (_, j) => 10 * j + r));
      expect((m as Int32Array)[0]).toBe(n - 1);
    }
  });

  describe.each([8, 2])('mismatches, radix %i', (radix) => {
    it('sizes, dtypes, ops and collectives that differ: the same RING_ERR_MISMATCH on every rank, then it works on', async () => {
      const n = 5;
      const gs = await groups(n, transport, radix);
      await expectMismatch(gs.map((g) => g.allreduce(new Float32Array(g.rank === 3 ? 2 : 1))), /element count \(ranks 0,1,2,4: 1; rank 3: 2\)/);
      await expectMismatch(gs.map((g) => g.allreduce(g.rank === 0 ? new Int32Array(1) : new Float32Array(1))), /dtype \(rank 0: int32; ranks 1,2,3,4: float32\)/);
      await expectMismatch(gs.map((g) => g.allreduce(new Float32Array(1), { op: g.rank === 4 ? 'max' : 'sum' })), /reduction op/);
      await expectMismatch(gs.map((g) => (g.rank === 2 ? g.barrier() : g.allreduce(new Float32Array(1)))), /collective \(ranks 0,1,3,4: 'allreduce'; rank 2: 'barrier'\)/);
      await checkAllreduce(gs, Float32Array, 'sum', 3);
    });

    it.each([[[0]], [[2]], [[4]], [[1, 3]], [[0, 1, 2, 3]]])(
      'ranks %j take the ring (a large input), the others the direct route: the count mismatch on every rank, never a hang',
      async (ringRanks) => {
        const n = 5;
        const gs = await groups(n, transport, radix);
        const big = 10_000; // 40 KB: past the inline limit
        await expectMismatch(
          gs.map((g) => g.allreduce(new Float32Array(ringRanks.includes(g.rank) ? big : 1))),
          /ranks disagree on the element count/,
        );
        await checkAllreduce(gs, Float32Array, 'sum', 1);
        await checkAllreduce(gs, Float32Array, 'max', big);
      },
    );
  });
});

describe('choosing the route', () => {
  it("'auto' takes the direct route for 3 or more ranks on more than one host; 'ring' and 'direct' force it", () => {
    expect(smallOpsRoute('auto', 4, 4)).toBe('direct');
    expect(smallOpsRoute('auto', 3, 2)).toBe('direct');
    expect(smallOpsRoute('auto', 2, 2)).toBe('ring');
    expect(smallOpsRoute('auto', 8, 1)).toBe('ring');
    expect(smallOpsRoute('ring', 8, 8)).toBe('ring');
    expect(smallOpsRoute('direct', 2, 1)).toBe('direct');
    expect(smallOpsRoute('direct', 1, 1)).toBe('ring');
  });

  it('RINGREDUCE_SMALL_OPS sets it, options.smallOps wins; anything else is refused naming the variable or option', () => {
    expect(tuning({ RINGREDUCE_SMALL_OPS: 'Direct' }).smallOps).toBe('direct');
    expect(resolveOptions({}, { RINGREDUCE_SMALL_OPS: 'ring' }).smallOps).toBe('ring');
    expect(resolveOptions({ smallOps: 'auto' }, { RINGREDUCE_SMALL_OPS: 'ring' }).smallOps).toBe('auto');
    expect(resolveOptions({}, {}).smallOps).toBe('auto');
    expect(() => tuning({ RINGREDUCE_SMALL_OPS: 'tree' })).toThrow(/RINGREDUCE_SMALL_OPS must be ring, direct or auto, got 'tree'/);
    expect(() => resolveOptions({ smallOps: 'tree' as never }, {})).toThrow(/options.smallOps must be 'ring', 'direct' or 'auto', got "tree"/);
  });

  it('ranks whose settings differ do not form a ring: a mismatch naming RINGREDUCE_SMALL_OPS', () => {
    const rec: RankRecord = { host: 'h', port: 1, size: 3, chunkBytes: 1024, pid: 1, hostname: 'h', machine: 'm', tls: false, protocol: 4 };
    expect(() => checkTable(0, [{ ...rec }, { ...rec, smallOps: 'auto' }, { ...rec }])).not.toThrow();
    expect(() => checkTable(0, [{ ...rec, smallOps: 'direct' }, { ...rec, smallOps: 'ring' }, { ...rec, smallOps: 'ring' }])).toThrow(
      /ranks disagree on small operations' route \(RINGREDUCE_SMALL_OPS \/ options.smallOps\) \(rank 0: direct; ranks 1,2: ring\)/,
    );
  });

  it("in-process ranks share a host: 'auto' keeps the ring, 'direct' does not", async () => {
    const auto = await createLocalGroups(3, { timeoutMs: 20_000 });
    open.push(...auto);
    await Promise.all(auto.map((g) => g.allreduce(Float32Array.of(1))));
    expect(auto.map(directSent)).toEqual([undefined, undefined, undefined]);
    const direct = await groups(3, 'memory', 8);
    await Promise.all(direct.map((g) => g.allreduce(Float32Array.of(1))));
    expect(direct.map(directSent)).toEqual([2, 2, 2]);
  });
});
