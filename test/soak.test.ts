import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root, runNode } from './helpers/run.js';

/**
 * A short soak: 3 real rank processes under ringrun run SOAK_OPS random operations (every
 * collective, every reduction, fp16/bf16 compression, send/recv patterns, all-to-alls, and group
 * ops beside world ops; sizes 0..4 MiB) drawn from one seed, and check every result exactly
 * (bench/soak.mjs; the full 5,000-op run is `node bench/soak.mjs`).
 *
 * Memory is measured after a full GC once 10% of the ops have run (allocator and JIT warmed up) and
 * at the end. Buffers of up to 4 MiB come and go with every op, so RSS moves by tens of MiB (the
 * allocator keeps freed pages); the V8 heap and live ArrayBuffers must stay nearly flat. A leak of
 * what an op allocates (one retained input per large op) would add hundreds of MiB.
 */
const SOAK_OPS = Number(process.env.SOAK_OPS ?? 400);
const SEED = Number(process.env.SOAK_SEED ?? 20261123);
const RSS_GROWTH_MIB = 128;
const HEAP_GROWTH_MIB = 16;
/** Live after the last op and a GC: at most the last op's few buffers, not one per op. */
const ARRAY_BUFFERS_MIB = 24;

describe('soak', () => {
  it(`${SOAK_OPS} random collectives, point-to-point and group ops on 3 processes: every result exact, RSS bounded`, async () => {
    const run = await runNode(
      [join(root, 'bench', 'soak.mjs'), '--np', '3', '--ops', String(SOAK_OPS), '--seed', String(SEED), '--max-bytes', '4MiB', '--json'],
      {},
      240_000,
    );
    const line = run.stdout.trim().split('\n').at(-1)!;
    const s = JSON.parse(line);
    console.log(`soak (seed ${SEED}): ${JSON.stringify({ ops: s.ops, kinds: s.kinds, wrong: s.wrong, errors: s.errors, rssMiB: s.rssMiB, heapMiB: s.heapMiB, durationS: s.durationS })}`);
    expect(s.problems, run.stderr).toEqual([]);
    expect(s.ranksReported).toBe(3);
    expect(s.ops).toEqual([SOAK_OPS, SOAK_OPS, SOAK_OPS]);
    expect(s.wrong).toBe(0);
    expect(s.errors).toBe(0);
    expect(run.code, run.stderr).toBe(0);
    // Every kind of op and both compressions actually ran; group ops are tallied by what ran in the group.
    for (const k of ['allreduce', 'allreduce fp16', 'allreduce bf16', 'allgather', 'broadcast', 'reducescatter', 'barrier', 'sendrecv', 'alltoall']) {
      expect(s.kinds[k], k).toBeGreaterThan(0);
    }
    const groupOps = Object.entries(s.kinds).filter(([k]) => k.startsWith('group '));
    expect(groupOps.reduce((sum, [, v]) => sum + (v as number), 0), JSON.stringify(s.kinds)).toBeGreaterThan(0);
    expect(s.bytesPerRank.every((b: number) => b > 0)).toBe(true);
    for (const r of s.rssMiB) expect(r.end - r.warm, `rank ${r.rank} RSS ${JSON.stringify(r)}`).toBeLessThan(RSS_GROWTH_MIB);
    // What the library itself keeps: the V8 heap and ArrayBuffers still alive after a full GC.
    for (const h of s.heapMiB) expect(h.end - h.warm, `rank ${h.rank} V8 heap ${JSON.stringify(h)}`).toBeLessThan(HEAP_GROWTH_MIB);
    for (const a of s.arrayBuffersMiB) expect(a.end, `rank ${a.rank} ArrayBuffers ${JSON.stringify(a)}`).toBeLessThan(ARRAY_BUFFERS_MIB);
  });
});
