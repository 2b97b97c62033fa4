import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalGroups, type RingGroup } from '../../src/index.js';
import type { NumericArray } from '../../src/dtypes.js';
import { expected, firstDiff, input, OPS, sameBytes, withDeadline, type Op } from './reference.js';

/**
 * The grid the core issue asks for: world sizes 1..6 x element counts {0, 1, 2, N-1, 7, 1000,
 * 1_000_003} x every op, on in-process memory links (same framing as the wire), and the same
 * collectives over real WebSockets on 127.0.0.1 for sizes 1..4. Data are integer-valued, so
 * results are compared exactly — and every rank's result must be bit-identical.
 */
const counts = (n: number) => [...new Set([0, 1, 2, n - 1, 7, 1000, 1_000_003])];

async function checkAllreduce(groups: RingGroup[], ctor: any, op: Op, count: number) {
  const ins = groups.map((g) => input(ctor, op, g.rank, count));
  const outs = await withDeadline(
    Promise.all(groups.map((g, r) => g.allreduce(ins[r], { op, name: `${op}-${count}` }))),
    30_000,
    `allreduce ${op} n=${groups.length} count=${count}`,
  );
  const want = expected(ctor, op, ins);
  expect(firstDiff(outs[0], want), `${ctor.name} ${op} N=${groups.length} count=${count}`).toBeUndefined();
  for (const o of outs) {
    expect(o).toBeInstanceOf(ctor);
    expect(sameBytes(o, outs[0])).toBe(true);
  }
  // Inputs are untouched.
  ins.forEach((x, r) => expect(firstDiff(x, input(ctor, op, r, count))).toBeUndefined());
}

async function checkReducescatter(groups: RingGroup[], ctor: any, op: Op, count: number) {
  const n = groups.length;
  const ins = groups.map((g) => input(ctor, op, g.rank, count));
  const outs = await withDeadline(Promise.all(groups.map((g, r) => g.reducescatter(ins[r], { op }))), 30_000, 'reducescatter');
  const want = expected(ctor, op, ins);
  let offset = 0;
  for (let r = 0; r < n; r++) {
    const len = Math.floor(count / n) + (r < count % n ? 1 : 0);
    expect(firstDiff(outs[r], want.subarray(offset, offset + len)), `rank ${r}`).toBeUndefined();
    offset += len;
  }
  expect(offset).toBe(count);
}

async function checkAllgather(groups: RingGroup[], lengths: number[]) {
  const ins = groups.map((g) => Float32Array.from({ length: lengths[g.rank] }, (_, i) => g.rank * 1000 + i));
  const outs = await withDeadline(Promise.all(groups.map((g, r) => g.allgather(ins[r]))), 30_000, 'allgather');
  const want = Float32Array.from(ins.flatMap((x) => Array.from(x)));
  for (const o of outs) expect(firstDiff(o, want)).toBeUndefined();
}

async function checkBroadcast(groups: RingGroup[], root: number, count: number) {
  const ins = groups.map((g) => Int32Array.from({ length: count }, (_, i) => g.rank * 100000 + i));
  const outs = await withDeadline(Promise.all(groups.map((g, r) => g.broadcast(ins[r], { root }))), 30_000, 'broadcast');
  for (const o of outs) expect(firstDiff(o, ins[root])).toBeUndefined();
  // x itself is unchanged on non-roots.
  expect(ins.every((x, r) => x[0] === (count ? r * 100000 : undefined))).toBe(true);
}

export function grid(transport: 'memory' | 'ws', sizes: number[], opts: { bigOps: Op[] }) {
  describe.each(sizes)(`${transport} transport, N=%i`, (n) => {
    let small: RingGroup[];
    let big: RingGroup[];
    beforeAll(async () => {
      // Tiny chunks for small counts (many chunks per segment, uneven last chunks); 64 KiB for the big one.
      small = await createLocalGroups(n, { transport, chunkBytes: 24, timeoutMs: 30_000 });
      big = await createLocalGroups(n, { transport, chunkBytes: 64 << 10, timeoutMs: 30_000 });
    });
    afterAll(async () => {
      await Promise.all([...(small ?? []), ...(big ?? [])].map((g) => g.shutdown()));
    });

    it.each(OPS)('allreduce float32, every count, op=%s', async (op) => {
      for (const count of counts(n)) {
        if (count === 1_000_003) {
          if (opts.bigOps.includes(op)) await checkAllreduce(big, Float32Array, op, count);
        } else await checkAllreduce(small, Float32Array, op, count);
      }
    });

    it.each([Float64Array, Int32Array])('allreduce %o, every op, counts up to 1000', async (ctor) => {
      for (const op of OPS) for (const count of counts(n).filter((c) => c <= 1000)) await checkAllreduce(small, ctor, op, count);
    });

    it('allreduce of the other integer dtypes', async () => {
      for (const ctor of [Uint32Array, Int16Array, Uint16Array, Int8Array, Uint8Array]) {
        for (const op of OPS) await checkAllreduce(small, ctor, op, 37);
      }
    });

    it('reducescatter, every op and count', async () => {
      for (const op of OPS) for (const count of counts(n).filter((c) => c <= 1000)) await checkReducescatter(small, Float32Array, op, count);
      await checkReducescatter(big, Int32Array, 'sum', 1_000_003);
    });

    it('allgather with uneven per-rank lengths (including empty)', async () => {
      await checkAllgather(small, Array.from({ length: n }, (_, r) => (r * 5) % 7));
      await checkAllgather(small, Array.from({ length: n }, () => 0));
      await checkAllgather(big, Array.from({ length: n }, (_, r) => 200_000 + r * 3));
    });

    it('broadcast from every root', async () => {
      for (let root = 0; root < n; root++) {
        await checkBroadcast(small, root, 0);
        await checkBroadcast(small, root, 101);
      }
      await checkBroadcast(big, n - 1, 1_000_003);
    });

    it('barrier, and operations issued back to back without awaiting', async () => {
      await withDeadline(Promise.all(small.map((g) => g.barrier())), 10_000, 'barrier');
      const rounds = 5;
      const all = await withDeadline(
        Promise.all(
          small.map((g) =>
            Promise.all(Array.from({ length: rounds }, (_, k) => g.allreduce(Float64Array.from([k, g.rank]), { name: `q${k}` }))),
          ),
        ),
        10_000,
        'queued allreduces',
      );
      for (const perRank of all) {
        perRank.forEach((res: NumericArray, k: number) => expect(Array.from(res)).toEqual([k * n, (n * (n - 1)) / 2]));
      }
    });
  });
}

