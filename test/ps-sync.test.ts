import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';
import { relErr, taggedResults, type TrainResult } from './helpers/results.js';

/**
 * Parameter servers in sync mode must not change the math: SGD on a global batch B, one process
 * (tfjs-train.mjs, size 1) against N workers taking their shards and pushing their gradients to S
 * servers, which average them and apply the same optimizer (BytePS's server-side optimizer). After
 * 5 steps the weights agree within 1e-5 relative (max|a-b| / max|b| per tensor), every worker holds
 * bit-identical weights (they pull the same bytes), no tensors leak, and every update had staleness 0.
 */
const single = join(root, 'test', 'fixtures', 'tfjs-train.mjs');
const fixture = join(root, 'test', 'fixtures', 'ps-train.mjs');
const STEPS = '5';
const BATCH = '12';

interface Result extends TrainResult {
  stats: { mode: string; servers: number; updates: number; maxStaleness: number; meanStaleness: number };
}

describe.each(['fit', 'async'])('parameter servers, sync mode, through %s', (mode) => {
  let reference: Result;
  it('single process reference', async () => {
    const r = await runNode([single], { MODE: mode, STEPS, BATCH }, 60_000);
    expect(r.code, r.stderr).toBe(0);
    [reference] = taggedResults<Result>(r.stdout, 'WEIGHTS');
  });

  it.each([
    [2, 1],
    [2, 2],
    [3, 2],
  ])('ringrun -np %i --servers %i matches the single process within 1e-5 relative', async (np, servers) => {
    const r = await runNode([ringrunBin, '-np', String(np), '--servers', String(servers), 'node', fixture], { MODE: mode, STEPS, BATCH }, 90_000);
    expect(r.code, r.stderr).toBe(0);
    const results = taggedResults<Result>(r.stdout, 'WEIGHTS');
    expect(results.map((x) => x.rank)).toEqual(Array.from({ length: np }, (_, i) => i));
    for (const res of results) {
      expect(res.weights).toEqual(results[0].weights);
      expect(new Set(res.numTensors.slice(1)).size).toBe(1);
      expect(res.stats).toEqual({ mode: 'sync', servers, updates: Number(STEPS), maxStaleness: 0, meanStaleness: 0, maxLag: 0, meanLag: 0, globalUpdates: np * Number(STEPS) });
    }
    for (const [name, w] of Object.entries(reference.weights)) {
      const err = relErr(results[0].weights[name], w);
      expect(err, `${name}: relative error ${err}`).toBeLessThanOrEqual(1e-5);
      expect(relErr(w, reference.initial[name])).toBeGreaterThan(1e-3);
    }
    // Each server reports its updates when the workers are done.
    for (let k = 0; k < servers; k++) expect(r.stdout + r.stderr).toContain(`parameter server ${k}: ${np * Number(STEPS)} updates, staleness max 0`);
  });

  it.each(['sgd', 'adam'])('a learning-rate schedule on the workers\' %s reaches the servers: -np 2 --servers 2 matches the single process with the same change', async (opt) => {
    // The rate halves after step 2 (sgd.setLearningRate, adam.learningRate =): the servers apply
    // steps 3-5 with it. Without the change reaching them, the weights differ by far more than 1e-5.
    const env = { MODE: mode, STEPS, BATCH, OPT: opt, LR_STEP: '2' };
    const ref = await runNode([single], env, 60_000);
    expect(ref.code, ref.stderr).toBe(0);
    const [one] = taggedResults<Result>(ref.stdout, 'WEIGHTS');
    const unchanged = await runNode([single], { ...env, LR_STEP: '-1' }, 60_000);
    const [plain] = taggedResults<Result>(unchanged.stdout, 'WEIGHTS');
    const r = await runNode([ringrunBin, '-np', '2', '--servers', '2', 'node', fixture], env, 90_000);
    expect(r.code, r.stderr).toBe(0);
    const [res] = taggedResults<Result>(r.stdout, 'WEIGHTS');
    for (const [name, w] of Object.entries(one.weights)) {
      expect(relErr(res.weights[name], w), name).toBeLessThanOrEqual(1e-5);
      expect(relErr(plain.weights[name], w), `${name}: the schedule changes the result`).toBeGreaterThan(1e-3);
    }
  });

  it('compression fp16: gradients 16-bit on the wire, weights within k·N·u of the exact run', async () => {
    const r = await runNode([ringrunBin, '-np', '2', '--servers', '2', 'node', fixture], { MODE: mode, STEPS, BATCH, COMPRESSION: 'fp16' }, 90_000);
    expect(r.code, r.stderr).toBe(0);
    const [res] = taggedResults<Result>(r.stdout, 'WEIGHTS');
    for (const [name, w] of Object.entries(reference.weights)) {
      let moved = 0;
      let diff = 0;
      for (let i = 0; i < w.length; i++) {
        moved = Math.max(moved, Math.abs(w[i] - reference.initial[name][i]));
        diff = Math.max(diff, Math.abs(res.weights[name][i] - w[i]));
      }
      expect(diff, name).toBeLessThanOrEqual(Number(STEPS) * 2 * 2 ** -11 * moved);
      expect(diff, `${name}: fp16 made no difference at all`).toBeGreaterThan(0);
    }
  });
});
