import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as rr from '../src/index.js';

/** The tfjs surface in one process (size 1: no comm worker); multi-rank behaviour is in tfjs-equivalence. */
beforeAll(async () => {
  await tf.setBackend('cpu');
  await rr.init({ rank: 0, size: 1 });
});
afterAll(() => rr.shutdown());

describe('DistributedOptimizer', () => {
  it('is a tf.Optimizer wrapping any tfjs optimizer', () => {
    for (const inner of [
      tf.train.sgd(0.1), tf.train.momentum(0.1, 0.9), tf.train.adam(0.01), tf.train.adagrad(0.1),
      tf.train.rmsprop(0.01), tf.train.adamax(0.01), tf.train.adadelta(1),
    ]) {
      const opt = new rr.DistributedOptimizer(inner);
      expect(opt instanceof tf.Optimizer).toBe(true);
      expect(opt instanceof rr.DistributedOptimizer).toBe(true);
      // tf.Optimizer's Symbol.hasInstance is a duck type: the plain optimizer must not pass as ours.
      expect(inner instanceof rr.DistributedOptimizer).toBe(false);
      expect(opt.inner).toBe(inner);
      const v = tf.variable(tf.tensor1d([1, 2, 3]));
      opt.minimize(() => v.square().sum() as tf.Scalar, false, [v]);
      expect(Array.from(v.dataSync()).every((x, i) => x < [1, 2, 3][i])).toBe(true);
      opt.dispose();
      v.dispose();
    }
  });

  it('with one rank applies exactly what the inner optimizer would', () => {
    const a = tf.variable(tf.tensor1d([1, -2, 3]), true, 'a1');
    const b = tf.variable(tf.tensor1d([1, -2, 3]), true, 'b1');
    const plain = tf.train.sgd(0.25);
    const dist = new rr.DistributedOptimizer(tf.train.sgd(0.25), { gradientPredivideFactor: 4 });
    for (let i = 0; i < 3; i++) {
      plain.minimize(() => a.square().sum() as tf.Scalar, false, [a]);
      dist.minimize(() => b.square().sum() as tf.Scalar, false, [b]);
    }
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([a, b]);
  });

  it('backwardPassesPerStep accumulates locally and updates every k-th call', async () => {
    const v = tf.variable(tf.tensor1d([1, 1]), true, 'acc1');
    const opt = new rr.DistributedOptimizer(tf.train.sgd(1), { backwardPassesPerStep: 3 });
    const grad = () => ({ acc1: tf.tensor1d([1, 2]) });
    for (let i = 0; i < 2; i++) {
      const g = grad();
      opt.applyGradients(g);
      tf.dispose(Object.values(g));
      expect(Array.from(v.dataSync())).toEqual([1, 1]); // not yet
    }
    const g = grad();
    await opt.applyGradientsAsync(g);
    tf.dispose(Object.values(g));
    expect(Array.from(v.dataSync())).toEqual([1 - 3, 1 - 6]); // the sum of 3 passes (Horovod's default)
    const avg = new rr.DistributedOptimizer(tf.train.sgd(1), { backwardPassesPerStep: 2, averageAggregatedGradients: true });
    for (let i = 0; i < 2; i++) {
      const g2 = grad();
      avg.applyGradients(g2);
      tf.dispose(Object.values(g2));
    }
    expect(Array.from(v.dataSync())).toEqual([-2 - 1, -5 - 2]);
    v.dispose();
  });

  it('leaks no tensors across steps (minimize, minimizeAsync, accumulation)', async () => {
    const v = tf.variable(tf.randomNormal([5, 4], 0, 1, 'float32', 1), true, 'leak1');
    const opt = new rr.DistributedOptimizer(tf.train.adam(0.01), { backwardPassesPerStep: 2 });
    const f = () => v.square().sum() as tf.Scalar;
    opt.minimize(f, false, [v]);
    opt.minimize(f, false, [v]);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 6; i++) {
      opt.minimize(f, false, [v]);
      const cost = await opt.minimizeAsync(f, true, [v]);
      cost?.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    opt.dispose();
    v.dispose();
  });

  it('serializes: getConfig / fromConfig through the registered class; weights delegate', async () => {
    const opt = new rr.DistributedOptimizer(tf.train.adam(0.005, 0.8), { op: 'sum', backwardPassesPerStep: 2 });
    expect(opt.getClassName()).toBe('DistributedOptimizer');
    const cfg = opt.getConfig();
    expect(cfg).toMatchObject({ inner: { className: 'Adam', config: { learningRate: 0.005, beta1: 0.8 } }, options: { op: 'sum', backwardPassesPerStep: 2 } });
    const [cls, fromConfig] = tf.serialization.SerializationMap.getMap().classNameMap.DistributedOptimizer;
    const copy = fromConfig(cls, cfg) as unknown as rr.DistributedOptimizer;
    expect(copy.inner.getClassName()).toBe('Adam');
    expect(copy.getConfig()).toEqual(cfg);
    const v = tf.variable(tf.tensor1d([1, 2]), true, 'ser1');
    opt.minimize(() => v.sum() as tf.Scalar, false, [v]);
    opt.minimize(() => v.sum() as tf.Scalar, false, [v]);
    const w = await opt.getWeights();
    expect(w.length).toBeGreaterThan(1); // iterations + Adam moments
    await copy.setWeights(w);
    expect((await copy.getWeights()).length).toBe(w.length);
    v.dispose();
  });

  it('rejects bad arguments with typed errors naming the option', () => {
    const bad = (o: object) => () => new rr.DistributedOptimizer(tf.train.sgd(1), o as never);
    expect(bad({ op: 'max' })).toThrow(/options.op must be 'average' or 'sum', got "max"/);
    expect(bad({ backwardPassesPerStep: 0 })).toThrow(/options.backwardPassesPerStep must be an integer >= 1, got 0/);
    expect(bad({ gradientPredivideFactor: -1 })).toThrow(/gradientPredivideFactor must be a positive number/);
    expect(bad({ compression: 'zip' })).toThrow(/options.compression must be 'none', 'fp16' or 'bf16'/);
    expect(bad({ compression: 'fp16' })).not.toThrow();
    // newGroup gives non-members null: constructing the optimizer there is the mistake this names.
    expect(bad({ group: null })).toThrow(/options.group must be a ProcessGroup from newGroup\(\) \(only its members construct the optimizer; newGroup gives the others null\), got null/);
    expect(bad({ group: { ranks: () => [0] } })).toThrow(/options.group must be a ProcessGroup from newGroup\(\).*got object/);
    expect(() => new rr.DistributedOptimizer({} as never)).toThrow(/must be a tfjs optimizer/);
    try {
      bad({ op: 'max' })();
    } catch (e) {
      expect((e as rr.RingError).code).toBe('RING_ERR_INVALID_ARG');
    }
    const opt = new rr.DistributedOptimizer(tf.train.sgd(1));
    expect(() => opt.applyGradients({ i: tf.tensor1d([1], 'int32') })).toThrow(/gradient 'i' is int32; only float32/);
  });
});

describe('model.fit with callbacks (one rank)', () => {
  it('trains; broadcast, metric averaging and warmup run; the warmup follows Horovod\'s schedule', async () => {
    const model = tf.sequential({ layers: [tf.layers.dense({ units: 1, inputShape: [2] })] });
    const opt = new rr.DistributedOptimizer(tf.train.sgd(0.1));
    model.compile({ optimizer: opt, loss: 'meanSquaredError', metrics: ['mse'] });
    const xs = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
    const ys = tf.tensor2d([[1], [2], [3], [4]]);
    const lrs: number[] = [];
    const h = await model.fit(xs, ys, {
      epochs: 3, batchSize: 2, verbose: 0, shuffle: false,
      callbacks: [
        rr.callbacks.broadcastGlobalVariables(0), rr.callbacks.metricAverage(),
        rr.callbacks.learningRateWarmup({ warmupEpochs: 2 }),
        new tf.CustomCallback({ onBatchEnd: async () => void lrs.push((opt.inner as unknown as { learningRate: number }).learningRate) }),
      ],
    });
    expect(h.history.loss).toHaveLength(3);
    expect(Number.isFinite(h.history.loss[2] as number)).toBe(true);
    // size 1: lr/size * (e*(size-1)/warmup + 1) = lr throughout.
    expect(lrs.every((x) => Math.abs(x - 0.1) < 1e-12)).toBe(true);
    tf.dispose([xs, ys]);
  });
});

describe('shard', () => {
  it('dropRemainder and pad give every rank the same count (arrays, tensors, datasets)', async () => {
    const seven = [0, 1, 2, 3, 4, 5, 6];
    const ranks = [0, 1, 2];
    expect(ranks.map((r) => rr.shard(seven, r, 3))).toEqual([[0, 3, 6], [1, 4], [2, 5]]);
    expect(ranks.map((r) => rr.shard(seven, r, 3, { dropRemainder: true }))).toEqual([[0, 3], [1, 4], [2, 5]]);
    expect(ranks.map((r) => rr.shard(seven, r, 3, { pad: true }))).toEqual([[0, 3, 6], [1, 4, 0], [2, 5, 1]]);
    const t = tf.tensor1d(seven);
    expect(ranks.map((r) => Array.from(rr.shard(t, r, 3, { dropRemainder: true }).dataSync()))).toEqual([[0, 3], [1, 4], [2, 5]]);
    expect(ranks.map((r) => Array.from(rr.shard(t, r, 3, { pad: true }).dataSync()))).toEqual([[0, 3, 6], [1, 4, 0], [2, 5, 1]]);
    const ds = tf.data.array(seven);
    expect(await Promise.all(ranks.map((r) => rr.shard(ds, r, 3, { dropRemainder: true }).toArray()))).toEqual([[0, 3], [1, 4], [2, 5]]);
    expect(await Promise.all(ranks.map((r) => rr.shard(ds, r, 3, { pad: true }).toArray()))).toEqual([[0, 3, 6], [1, 4, 0], [2, 5, 1]]);
    // Fewer elements than ranks: padding repeats from the start.
    expect([0, 1, 2, 3].map((r) => rr.shard([7, 8], r, 4, { pad: true }))).toEqual([[7], [8], [7], [8]]);
    expect(await Promise.all([0, 1, 2, 3].map((r) => rr.shard(tf.data.array([7, 8]), r, 4, { pad: true }).toArray()))).toEqual([[7], [8], [7], [8]]);
    tf.dispose(t);
  });

  it('arrays, tensors and datasets: elements rank, rank+size, ...', async () => {
    expect(rr.shard([0, 1, 2, 3, 4, 5, 6], 1, 3)).toEqual([1, 4]);
    expect(rr.shard([0, 1, 2], 0, 1)).toEqual([0, 1, 2]);
    const t = rr.shard(tf.tensor2d([[0], [1], [2], [3], [4]]), 0, 2);
    expect(Array.from(t.dataSync())).toEqual([0, 2, 4]);
    const ds = rr.shard(tf.data.array([10, 11, 12, 13, 14, 15]), 2, 3);
    expect(await ds.toArray()).toEqual([12, 15]);
    expect(await ds.toArray()).toEqual([12, 15]); // every epoch
    expect(() => rr.shard([1], 2, 2)).toThrow(/shard: rank must be in 0..1, got 2/);
    expect(() => rr.shard([1], 0, 2, { dropRemainder: true, pad: true })).toThrow(/cannot both be set/);
    expect(() => rr.shard([1], 0, 2, { pad: 1 as never })).toThrow(/options\.pad must be a boolean/);
    expect(() => rr.shard({} as never, 0, 1)).toThrow(/must be an array, a tf.Tensor or a tf.data.Dataset/);
  });
});
