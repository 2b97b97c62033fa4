import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';
import { taggedResults } from './helpers/results.js';

/**
 * DistributedOptimizer's `group` option (Horovod's process_set): gradients reduced over a process
 * set through the comm worker, several sets and the world at once, every reduction exact.
 */
const fixture = join(root, 'test', 'fixtures', 'tfjs-group.mjs');

interface Result {
  rank: number;
  groupRanks: number[];
  sameGroup: boolean;
  steps: Record<string, number[]>;
}

describe('DistributedOptimizer over a process set (ringrun -np 4, sets [0,2] and [1,3])', () => {
  it('sum, average, fp16, predivide: exact, per set; the world optimizer beside them sums all four', async () => {
    const r = await runNode([ringrunBin, '-np', '4', 'node', fixture], {}, 120_000);
    expect(r.code, r.stderr).toBe(0);
    const results = taggedResults<Result>(r.stdout, 'GROUP');
    expect(results.map((x) => x.rank)).toEqual([0, 1, 2, 3]);
    const w0 = [100, 200, 300];
    const grad = (rank: number) => [1, 2, 3].map((i) => rank + i);
    for (const res of results) {
      const set = res.rank % 2 === 0 ? [0, 2] : [1, 3];
      expect(res.groupRanks).toEqual(set);
      expect(res.sameGroup).toBe(true);
      const sum = [0, 1, 2].map((i) => grad(set[0])[i] + grad(set[1])[i]);
      expect(res.steps.sum).toEqual(w0.map((w, i) => w - sum[i]));
      expect(res.steps.avg).toEqual(w0.map((w, i) => w - sum[i] / 2));
      expect(res.steps.fp16).toEqual(w0.map((w, i) => w - sum[i]));
      expect(res.steps.pre).toEqual(w0.map((w, i) => w - sum[i] / 2));
      const all = [0, 1, 2].map((i) => [0, 1, 2, 3].reduce((s, k) => s + grad(k)[i], 0));
      expect(res.steps.world).toEqual(w0.map((w, i) => w - all[i]));
      // The blocking path (minimize: applyGradients in Atomics.wait) on the same set, a second step.
      expect(res.steps.sync).toEqual(w0.map((w, i) => w - 2 * sum[i]));
    }
  });

  it('a member whose gradient has another shape: typed mismatch naming the ranks on both members of that set; the rest goes on', async () => {
    const r = await runNode([ringrunBin, '-np', '4', 'node', fixture], { MISMATCH: '1' }, 120_000);
    for (const k of [0, 2]) {
      expect(r.stdout).toMatch(
        new RegExp(`\\[1,${k}\\]<stdout>:ERROR RING_ERR_MISMATCH rank ${k}: gradient negotiation round \\d+: tensor 'sum/sum/w' has different shapes: rank 0: \\[3\\]; rank 2: \\[4\\] \\(shape\\)`),
      );
    }
    // The other set, and the world optimizer (which every rank used alike), are unaffected.
    const others = taggedResults<Result>(r.stdout, 'GROUP');
    expect(others.map((x) => x.rank)).toEqual([1, 3]);
    for (const res of others) expect(res.steps.world).toEqual([90, 186, 282]);
  });
});
