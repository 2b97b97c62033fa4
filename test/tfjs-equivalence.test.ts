import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';
import { relErr, taggedResults, type TrainResult } from './helpers/results.js';

/**
 * Data parallelism must not change the math: SGD on a global batch B, one process with batch B
 * versus N ranks (ringrun -np 2, -np 3) each taking its strided shard of the same B examples with
 * gradients averaged. After k steps the weights must match within 1e-5 relative (fp32) — measured
 * per tensor as max|a - b| / max|b| — and every rank must hold bit-identical weights.
 */
const fixture = join(root, 'test', 'fixtures', 'tfjs-train.mjs');
const STEPS = '5';
const BATCH = '12'; // divisible by 1, 2 and 3

type Result = TrainResult;

const parse = (stdout: string): Result[] => taggedResults<Result>(stdout, 'WEIGHTS');

describe.each(['fit', 'async'])('DistributedOptimizer equivalence through %s', (mode) => {
  let single: Result;
  it('single process reference', async () => {
    const r = await runNode([fixture], { MODE: mode, STEPS, BATCH }, 60_000);
    expect(r.code, r.stderr).toBe(0);
    [single] = parse(r.stdout);
    expect(single.size).toBe(1);
    // No tensor leaks: the count is the same after every step.
    expect(new Set(single.numTensors.slice(1)).size).toBe(1);
  });

  it.each([2, 3])('ringrun -np %i matches the single process within 1e-5 relative; ranks bit-identical', async (n) => {
    const r = await runNode([ringrunBin, '-np', String(n), 'node', fixture], { MODE: mode, STEPS, BATCH }, 90_000);
    expect(r.code, r.stderr).toBe(0);
    const results = parse(r.stdout);
    expect(results.map((x) => x.rank)).toEqual(Array.from({ length: n }, (_, i) => i));
    for (const res of results) {
      expect(res.weights).toEqual(results[0].weights); // bit-identical (JSON of float32 values)
      expect(new Set(res.numTensors.slice(1)).size).toBe(1);
    }
    for (const [name, w] of Object.entries(single.weights)) {
      const err = relErr(results[0].weights[name], w);
      expect(err, `${name}: relative error ${err}`).toBeLessThanOrEqual(1e-5);
      // And training did move the weights (the comparison is not vacuous).
      expect(relErr(w, single.initial[name])).toBeGreaterThan(1e-3);
    }
  });

  it('a rank with an extra layer: typed mismatch error on every rank, no hang', async () => {
    const r = await runNode([ringrunBin, '-np', '2', 'node', fixture], { MODE: mode, STEPS, BATCH, SKIP_BROADCAST: '1', EXTRA_LAYER_RANK: '1' }, 60_000);
    for (const k of [0, 1]) {
      expect(r.stdout).toMatch(new RegExp(`\\[1,${k}\\]<stdout>:ERROR RING_ERR_MISMATCH rank ${k}: gradient negotiation round \\d+: tensor 'opt0/extra/\\w+' is submitted by rank 1 but not by rank 0`));
    }
  });
});

it('the initial broadcast already refuses different models', async () => {
  const r = await runNode([ringrunBin, '-np', '2', 'node', fixture], { STEPS, BATCH, EXTRA_LAYER_RANK: '1' }, 60_000);
  expect(r.stdout).toMatch(/\[1,0\]<stdout>:ERROR RING_ERR_MISMATCH rank 0: broadcast #\d+ 'broadcastVariables:float32': ranks disagree on the element count/);
  expect(r.stdout).toMatch(/\[1,1\]<stdout>:ERROR RING_ERR_MISMATCH/);
});

/**
 * With compression the reduced gradients differ from the exact average: per element by at most
 * N·u·mean|g| (u = 2^-11 fp16, 2^-8 bf16; README "Compression"). One SGD step turns that into at
 * most lr·N·u·|g| of weight error, against an update of lr·|g|; over k steps the errors add
 * (first order), so we require max|w - w_ref| <= k·N·u · max|w_ref - w_0| over all weights —
 * and every rank still holds bit-identical weights.
 */
describe.each([['fp16', 2 ** -11], ['bf16', 2 ** -8]] as const)('DistributedOptimizer with %s compression', (compression, u) => {
  let single: Result;
  it.each([2, 3])('ringrun -np %i stays within k·N·u of the exact run', async (n) => {
    if (!single) {
      const r = await runNode([fixture], { STEPS, BATCH }, 60_000);
      [single] = parse(r.stdout);
    }
    const r = await runNode([ringrunBin, '-np', String(n), 'node', fixture], { STEPS, BATCH, COMPRESSION: compression }, 90_000);
    expect(r.code, r.stderr).toBe(0);
    const results = parse(r.stdout);
    for (const res of results) expect(res.weights).toEqual(results[0].weights);
    let err = 0;
    let update = 0;
    for (const [name, w] of Object.entries(single.weights)) {
      const a = results[0].weights[name];
      for (let i = 0; i < w.length; i++) {
        err = Math.max(err, Math.abs(a[i] - w[i]));
        update = Math.max(update, Math.abs(w[i] - single.initial[name][i]));
      }
    }
    expect(err / update).toBeLessThanOrEqual(Number(STEPS) * n * u);
    expect(err).toBeGreaterThan(0); // compression really was on the wire
  });
});
