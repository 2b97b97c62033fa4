import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';
import { relErr, taggedResults } from './helpers/results.js';

/**
 * Pipeline parallelism must not change the math (issue 16): SGD on a fixed global batch of 12 for
 * 5 steps, model.fit in one process versus rr.pipeline over ringrun -np 2 and -np 3 (GPipe and
 * 1F1B, given and measured cuts) and 2 x 2 data x pipeline. Every layer's weights, read on the rank
 * that owns it through model.getLayer(name).getWeights(), within 1e-5 relative (max|a-b| / max|b|)
 * of the single process; the History and predict() alike on every rank; tf.memory().numTensors
 * the same after every step. Then the memory of a stage, and the errors, each on every rank.
 * Every run is bounded (runNode's deadline); no timing is asserted.
 */
const fixture = join(root, 'test', 'fixtures', 'pipeline-train.mjs');
const BASE = { STEPS: '5', BATCH: '12' };

interface Result {
  rank: number;
  size: number;
  layers: string[];
  weights: Record<string, number[]>;
  initial: Record<string, number[]>;
  numTensors: number[];
  history: Record<string, number[]>;
  predictions: number[];
  peakBytes?: number;
  initialLoss?: number;
}

const parse = (stdout: string): Result[] => taggedResults<Result>(stdout, 'RESULT');

async function ranks(np: number, env: Record<string, string>, extra: string[] = []) {
  const r = await runNode([ringrunBin, '-np', String(np), ...extra, 'node', fixture], { ...BASE, PIPE: '1', ...env }, 90_000);
  return { ...r, results: parse(r.stdout) };
}

let single: Result;
beforeAll(async () => {
  const r = await runNode([fixture], BASE, 60_000);
  expect(r.code, r.stderr).toBe(0);
  [single] = parse(r.stdout);
  expect(single.layers).toEqual(['d0', 'd1', 'd2', 'out']);
}, 60_000);

/** Every layer owned exactly once across a pipeline's ranks, each within 1e-5 of the single process. */
function expectEquivalent(results: Result[], stages: number, label: string) {
  const owners = new Map<string, number>();
  for (const res of results.slice(0, stages)) for (const l of res.layers) owners.set(l, (owners.get(l) ?? 0) + 1);
  expect([...owners.keys()].sort(), label).toEqual([...single.layers].sort());
  expect([...owners.values()].every((n) => n === 1), `${label}: each layer on one stage`).toBe(true);
  const errs: string[] = [];
  for (const res of results) {
    for (const [name, w] of Object.entries(res.weights)) {
      const err = relErr(w, single.weights[name]);
      errs.push(`${name}@${res.rank}: ${err.toExponential(2)}`);
      expect(err, `${label}: ${name} on rank ${res.rank}: relative error ${err}`).toBeLessThanOrEqual(1e-5);
      expect(relErr(single.weights[name], single.initial[name])).toBeGreaterThan(1e-3); // training moved it
    }
    // The History is model.fit's, on every rank; predict() gives the whole model's output everywhere.
    expect(res.history.loss[0]).toBeCloseTo(single.history.loss[0], 5);
    expect(res.history.acc[0]).toBeCloseTo(single.history.acc[0], 5);
    expect(res.history).toEqual(results[0].history);
    expect(relErr(res.predictions, single.predictions)).toBeLessThanOrEqual(1e-5);
    // No tensor leaks: the count is the same after every step (the first creates optimizer state).
    expect(new Set(res.numTensors.slice(1)).size, `${label}: numTensors ${res.numTensors}`).toBe(1);
  }
  console.log(`[pipeline] ${label}: max relative error ${Math.max(...errs.map((e) => Number(e.split(': ')[1])))} (${errs.join(', ')})`);
}

describe('equivalence with one process (SGD, batch 12, 5 steps)', () => {
  it.each([
    { np: 2, schedule: 'gpipe', stages: '[2]', micro: '3', predictBatch: '5' },
    { np: 2, schedule: '1f1b', stages: 'auto', micro: '4', predictBatch: '32' },
    { np: 3, schedule: 'gpipe', stages: '[1,3]', micro: '6', predictBatch: '3' },
    { np: 3, schedule: '1f1b', stages: 'auto', micro: '3', predictBatch: '32' },
  ])('ringrun -np $np, $schedule, stages $stages, $micro micro-batches', async ({ np, schedule, stages, micro, predictBatch }) => {
    const r = await ranks(np, { SCHEDULE: schedule, STAGES: stages, MICRO: micro, PREDICT_BATCH: predictBatch });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.results.map((x) => x.rank)).toEqual(Array.from({ length: np }, (_, i) => i));
    expectEquivalent(r.results, np, `-np ${np} ${schedule} ${stages} M=${micro}`);
    // The cut is printed once, by rank 0.
    const cutLines = r.stdout.split('\n').filter((l) => l.includes('ringreduce: pipeline of'));
    expect(cutLines, r.stdout).toHaveLength(1);
    expect(cutLines[0]).toMatch(new RegExp(`^\\[1,0\\]<stdout>:ringreduce: pipeline of ${np} stage\\(s\\), ${schedule}, ${micro} micro-batches, cut \\[`));
    if (stages === 'auto') {
      // The layers timed alone, then the stages timed in the first batch's schedule (calibrate).
      expect(cutLines[0]).toMatch(/\(auto, by measured ms forward\+backward \(forward\): [\d., ()]+; (kept|moved from \[[\d, ]+\]) after timing the stages in training \(ms per stage: \[[\d, ]+\] [\d.]+( \| [\d.]+)+(, \[[\d, ]+\] [\d.]+( \| [\d.]+)+)*\)\)/);
    }
  });

  it('2 x 2 data x pipeline (pipelineGroups): each pipeline on its shard, gradients averaged per stage; a loss function and verbose output', async () => {
    const r = await ranks(4, { DXP: '2', SCHEDULE: '1f1b', STAGES: '[2]', MICRO: '2', LOSS_FN: '1', VERBOSE: '1' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.results.map((x) => x.layers)).toEqual([['d0', 'd1'], ['d2', 'out'], ['d0', 'd1'], ['d2', 'out']]);
    expectEquivalent(r.results, 2, '2 x 2');
    // The replicas of a stage hold bit-identical weights.
    expect(r.results[2].weights).toEqual(r.results[0].weights);
    expect(r.results[3].weights).toEqual(r.results[1].weights);
    // verbose: 1 prints each epoch once, on the first rank of the first pipeline.
    const epochLines = r.stdout.split('\n').filter((l) => /Epoch 1\/1: loss=/.test(l));
    expect(epochLines, r.stdout).toHaveLength(1);
    expect(epochLines[0]).toMatch(/^\[1,0\]<stdout>:Epoch 1\/1: loss=\d\.\d{4} acc=\d\.\d{4} \(\d+\.\d s\)$/);
  });

  it('2 x 2 with fp16 compression of the replicas\' average, stages \'auto\': close to the exact run, replicas bit-identical', async () => {
    // 'auto': each pipeline times its stages, and the first pipeline's cut is every pipeline's.
    const r = await ranks(4, { DXP: '2', STAGES: 'auto', MICRO: '2', COMPRESSION: 'fp16' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.results[2].layers).toEqual(r.results[0].layers);
    expect(r.results[3].layers).toEqual(r.results[1].layers);
    expect(r.results[2].weights).toEqual(r.results[0].weights);
    expect(r.results[3].weights).toEqual(r.results[1].weights);
    let err = 0;
    let update = 0;
    for (const res of r.results.slice(0, 2)) {
      for (const [name, w] of Object.entries(res.weights)) {
        for (let i = 0; i < w.length; i++) {
          err = Math.max(err, Math.abs(w[i] - single.weights[name][i]));
          update = Math.max(update, Math.abs(single.weights[name][i] - single.initial[name][i]));
        }
      }
    }
    // The bound of the data-parallel compression test: k steps x N ranks x u (2^-11).
    expect(err / update).toBeLessThanOrEqual(5 * 2 * 2 ** -11);
    expect(err).toBeGreaterThan(0); // compression really was on the wire
  });

  it('shuffle: the same permutation on every stage (the ranks agree on a seed), 2 epochs', async () => {
    // With a learning rate of 0 an epoch's loss is the mean over all examples whatever their order,
    // if and only if the first stage's inputs meet their own labels on the last.
    const r = await ranks(2, { SHUFFLE: '1', EPOCHS: '2', STAGES: '[2]', LR: '0' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.results[0].history.loss).toHaveLength(2);
    expect(r.results[1].history).toEqual(r.results[0].history);
    for (const l of r.results[0].history.loss) expect(Math.abs(l - r.results[0].initialLoss!)).toBeLessThan(1e-6);
  });
});

it('memory: a stage of a 2-stage split of a 4-layer MLP (Adam, 1F1B) peaks at <= 0.6x the whole model in one process', async () => {
  const env = { MEMORY: '1', WIDTH: '256', OPTIMIZER: 'adam', STEPS: '2' };
  const one = await runNode([fixture], { ...BASE, ...env }, 60_000);
  expect(one.code, one.stderr).toBe(0);
  const whole = parse(one.stdout)[0].peakBytes!;
  const r = await ranks(2, { ...env, STAGES: '[2]', SCHEDULE: '1f1b', MICRO: '3' });
  expect(r.code, r.stdout + r.stderr).toBe(0);
  const ratios = r.results.map((x) => x.peakBytes! / whole);
  console.log(`[pipeline] memory: one process peaks at ${whole} B; stages ${r.results.map((x) => x.peakBytes).join(', ')} B (${ratios.map((q) => q.toFixed(3)).join(', ')}x)`);
  for (const q of ratios) expect(q).toBeLessThanOrEqual(0.6);
});

describe('errors, raised on every rank', () => {
  const errorsOf = (stdout: string, np: number) =>
    Array.from({ length: np }, (_, k) => stdout.split('\n').find((l) => l.startsWith(`[1,${k}]<stdout>:ERROR `))?.slice(`[1,${k}]<stdout>:ERROR `.length));

  it('a rank whose model has an extra layer: RING_ERR_MISMATCH naming the layer count and the ranks', async () => {
    const r = await ranks(2, { EXTRA_LAYER_RANK: '1' });
    const errs = errorsOf(r.stdout, 2);
    errs.forEach((e, k) => expect(e, r.stdout).toMatch(new RegExp(`^RING_ERR_MISMATCH rank ${k}: pipeline: ranks disagree on the model: its number of layers \\(rank 0: 4 layers \\(Dense, Dense, Dense, Dense\\); rank 1: 5 layers`)));
  });

  it('microBatches that does not divide the batch: RING_ERR_INVALID_ARG naming both', async () => {
    const r = await ranks(2, { MICRO: '5' });
    const errs = errorsOf(r.stdout, 2);
    errs.forEach((e, k) => expect(e, r.stdout).toBe(`RING_ERR_INVALID_ARG rank ${k}: pipeline.fit: fit: batchSize 12 is not a multiple of microBatches 5: each micro-batch must have batchSize / microBatches examples`));
  });

  it('more stages than layers: RING_ERR_INVALID_ARG on all 3 ranks', async () => {
    const r = await ranks(3, { LAYERS: '2' });
    const errs = errorsOf(r.stdout, 3);
    errs.forEach((e, k) => expect(e, r.stdout).toBe(`RING_ERR_INVALID_ARG rank ${k}: pipeline: 3 stages but the model has only 2 layer(s): a stage needs at least one layer`));
  });

  it('a Dropout layer on a stage that is not the last (its forward pass runs twice): RING_ERR_INVALID_ARG naming it', async () => {
    const r = await ranks(2, { DROPOUT: '1', STAGES: '[2]' });
    const errs = errorsOf(r.stdout, 2);
    errs.forEach((e, k) => expect(e, r.stdout).toMatch(new RegExp(`^RING_ERR_INVALID_ARG rank ${k}: pipeline: layer 'drop' \\(Dropout\\) is on stage 0, not the last: `)));
  });

  it('a stage that dies (kill -9 in step 3): every other stage fails fast with RING_ERR_PEER_LOST naming it', async () => {
    const r = await ranks(3, { STAGES: '[1,3]', DIE_RANK: '1', DIE_STEP: '2', TRAP_SIGTERM: '1' }, ['--grace', '20']);
    expect(r.stderr).toMatch(/ringrun: rank 1 \(pid \d+\) was killed by signal SIGKILL/);
    const errs = errorsOf(r.stdout, 3);
    for (const k of [0, 2]) expect(errs[k], r.stdout).toMatch(new RegExp(`^RING_ERR_PEER_LOST pipeline stage ${k}: stage 1 \\(rank 1\\) is gone: `));
  });
});
