import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as rr from '../src/index.js';

/**
 * rr.pipeline's surface in one process (size 1: a pipeline of one stage): every option and fit /
 * predict argument checked at the boundary with a message naming it, and what a one-stage pipeline
 * does (it is model.fit). Several ranks: test/pipeline.test.ts.
 */
beforeAll(async () => {
  await tf.setBackend('cpu');
  await rr.init({ rank: 0, size: 1 });
});
afterAll(() => rr.shutdown());

let seq = 0;
function mlp(layers = 3): tf.Sequential {
  const m = tf.sequential();
  const k = seq++;
  for (let l = 0; l < layers; l++) {
    m.add(tf.layers.dense({ units: l === layers - 1 ? 3 : 8, activation: l === layers - 1 ? 'softmax' : 'tanh', name: `m${k}_d${l}`, kernelInitializer: tf.initializers.glorotUniform({ seed: l + 1 }), ...(l === 0 ? { inputShape: [4] } : {}) }));
  }
  return m;
}
const data = (n = 24) => {
  const x = tf.tensor2d(Array.from({ length: n }, (_, i) => [0, 1, 2, 3].map((j) => Math.sin(i + j))));
  const y = tf.oneHot(tf.tensor1d(Array.from({ length: n }, (_, i) => i % 3), 'int32'), 3).toFloat();
  return { x, y };
};
const base = () => ({ optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy' });

describe('options are checked when the pipeline is made, naming the option', () => {
  it.each([
    [{ stages: 'even' }, /options.stages must be 'auto' or an array of integer cut points/],
    [{ stages: [1.5] }, /options.stages must be/],
    [{ microBatches: 0 }, /options.microBatches must be an integer in 1..16384, got 0/],
    [{ microBatches: 2.5 }, /options.microBatches/],
    [{ schedule: 'interleaved' }, /options.schedule must be 'gpipe' or '1f1b', got "interleaved"/],
    [{ optimizer: 'adam' }, /options.optimizer must be a tfjs optimizer/],
    [{ loss: 'hinge' }, /options.loss must be one of 'categoricalCrossentropy', .* or a function/],
    [{ metrics: ['auc'] }, /options.metrics must be an array of 'accuracy'/],
    [{ compression: 'int8' }, /options.compression must be 'none', 'fp16', 'bf16', got "int8"/],
    [{ group: {} }, /options.group must be a ProcessGroup/],
    [{ replicas: 3 }, /options.replicas must be a ProcessGroup/],
  ])('%j', (bad, message) => {
    const e = (() => {
      try {
        rr.pipeline(mlp(), { ...base(), ...(bad as object) } as never);
      } catch (err) {
        return err as rr.RingError;
      }
    })();
    expect(e?.code).toBe('RING_ERR_INVALID_ARG');
    expect(e?.message).toMatch(message);
  });

  it('a DistributedOptimizer as the stages\' optimizer: over a process set only, and not with the shorthand', async () => {
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        return `${(err as rr.RingError).code} ${(err as Error).message}`;
      }
      return 'no error';
    };
    const world = new rr.DistributedOptimizer(tf.train.sgd(0.1));
    expect(code(() => rr.pipeline(mlp(), { ...base(), optimizer: world } as never))).toMatch(
      /^RING_ERR_INVALID_ARG pipeline: options.optimizer is a DistributedOptimizer over the world, but a pipeline's stages hold different layers: give it \{ group: replicas \}/,
    );
    const replicas = (await rr.newGroup([0]))!;
    const overSet = new rr.DistributedOptimizer(tf.train.sgd(0.1), { group: replicas });
    expect(code(() => rr.pipeline(mlp(), { ...base(), optimizer: overSet, compression: 'fp16' } as never))).toMatch(
      /^RING_ERR_INVALID_ARG pipeline: options.replicas and options.compression are a shorthand .* give it \{ group: replicas, compression \} instead/,
    );
    // Over a set of one it trains (no comm worker: the update is the inner optimizer's own).
    const { x, y } = data();
    const pipe = rr.pipeline(mlp(), { ...base(), optimizer: overSet, stages: [] } as never);
    const h = await pipe.fit(x, y, { batchSize: 8, epochs: 1, verbose: 0 });
    expect(h.history.loss[0]).toBeGreaterThan(0);
    tf.dispose([x, y]);
  });

  it('the model must be a tf.Sequential', () => {
    const input = tf.input({ shape: [4] });
    const functional = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 2 }).apply(input) as tf.SymbolicTensor });
    expect(() => rr.pipeline(functional as never, base() as never)).toThrow(/model must be a tf.Sequential/);
  });
});

describe('fit and predict arguments', () => {
  it.each([
    [{ batchSize: 0 }, /fit: args.batchSize must be an integer >= 1, got 0/],
    [{ epochs: -1 }, /fit: args.epochs must be an integer >= 0/],
    [{ shuffle: 'yes' }, /fit: args.shuffle must be a boolean/],
    [{ verbose: 2 }, /fit: args.verbose must be 0 or 1/],
  ])('fit %j', async (bad, message) => {
    const { x, y } = data();
    const pipe = rr.pipeline(mlp(), base() as never);
    await expect(pipe.fit(x, y, bad as never)).rejects.toThrow(message);
  });

  it('fit and predict take tensors; predict checks its batchSize', async () => {
    const pipe = rr.pipeline(mlp(), base() as never);
    await expect(pipe.fit([1] as never, [2] as never)).rejects.toThrow(/xs and ys must be tf.Tensors/);
    await expect(pipe.predict(tf.zeros([2, 4]), { batchSize: -3 })).rejects.toThrow(/predict: args.batchSize must be an integer >= 1, got -3/);
  });

  it('xs and ys of different lengths, and microBatches not dividing batchSize, are agreed errors', async () => {
    const { x } = data(10);
    const { y } = data(12);
    const pipe = rr.pipeline(mlp(), { ...base(), microBatches: 4 } as never);
    await expect(pipe.fit(x, y, { batchSize: 8 })).rejects.toThrow(/^rank 0: pipeline.fit: fit: xs has 10 examples but ys has 12$/);
    await expect(pipe.fit(x, tf.zeros([10, 3]), { batchSize: 6 })).rejects.toThrow(/batchSize 6 is not a multiple of microBatches 4/);
  });
});

describe('a one-stage pipeline', () => {
  it('trains like model.fit: same weights, same History (loss and accuracy), callbacks called, predict equal', async () => {
    const { x, y } = data();
    const ref = mlp();
    const mine = mlp();
    mine.setWeights(ref.getWeights());
    ref.compile({ optimizer: tf.train.sgd(0.3), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
    const h1 = await ref.fit(x, y, { batchSize: 8, epochs: 2, shuffle: false, verbose: 0 });
    const seen: string[] = [];
    const pipe = rr.pipeline(mine, { optimizer: tf.train.sgd(0.3), loss: 'categoricalCrossentropy', metrics: ['accuracy'], microBatches: 4, schedule: 'gpipe' });
    const h2 = await pipe.fit(x, y, {
      batchSize: 8, epochs: 2, shuffle: false, verbose: 0,
      callbacks: { onTrainBegin: async () => void seen.push('train'), onEpochEnd: async (e) => void seen.push(`epoch ${e}`), onBatchEnd: async (b, logs) => void seen.push(`batch ${b} ${logs!.size}`) },
    });
    expect(seen).toEqual(['train', 'batch 0 8', 'batch 1 8', 'batch 2 8', 'epoch 0', 'batch 0 8', 'batch 1 8', 'batch 2 8', 'epoch 1']);
    expect(h2.epoch).toEqual([0, 1]);
    for (const k of ['loss', 'acc']) {
      h2.history[k].forEach((v, i) => expect(v as number).toBeCloseTo(h1.history[k][i] as number, 5));
    }
    const a = ref.getWeights().map((w) => Array.from(w.dataSync()));
    const b = mine.getWeights().map((w) => Array.from(w.dataSync()));
    a.forEach((w, i) => w.forEach((v, j) => expect(Math.abs(v - b[i][j])).toBeLessThan(1e-6)));
    const p1 = ref.predict(x) as tf.Tensor;
    const p2 = await pipe.predict(x, { batchSize: 5 });
    expect(p2.shape).toEqual([24, 3]);
    expect(Math.max(...Array.from(tf.sub(p1, p2).abs().dataSync()))).toBeLessThan(1e-6);
    expect(pipe.stageLayers()).toEqual(mine.layers.map((l) => l.name));
    const s = pipe.stats();
    expect(s).toMatchObject({ stage: 0, stages: 1, steps: 6 });
    expect(s.stepMs).toBeGreaterThan(0);
    expect(s.waitMs).toBeGreaterThanOrEqual(0);
  });

  it('stageLayers: at once with given cut points; with stages auto only after build()', async () => {
    const m = mlp();
    expect(rr.pipeline(m, { ...base(), stages: [] } as never).stageLayers()).toEqual(m.layers.map((l) => l.name));
    expect(() => rr.pipeline(m, { ...base(), stages: [1] } as never).stageLayers()).toThrow(/1 cut point\(s\) make 2 stages, but the pipeline has 1 ranks/);
    const auto = rr.pipeline(m, base() as never);
    expect(() => auto.stageLayers()).toThrow(/await pipe.build\(\)/);
    expect(auto.stats().steps).toBe(0);
    await auto.build();
    expect(auto.stageLayers()).toEqual(m.layers.map((l) => l.name));
  });

  it('metrics mse and mae, a loss by name (meanSquaredError), and EarlyStopping stops every stage alike', async () => {
    const { x, y } = data();
    const pipe = rr.pipeline(mlp(), { optimizer: tf.train.sgd(0.1), loss: 'meanSquaredError', metrics: ['mse', 'mae'], microBatches: 2 });
    const h = await pipe.fit(x, y, { batchSize: 8, epochs: 5, verbose: 0, callbacks: [tf.callbacks.earlyStopping({ monitor: 'loss', patience: 0, minDelta: 10 })] });
    expect(Object.keys(h.history).sort()).toEqual(['loss', 'mae', 'mse']);
    expect(h.history.loss[0] as number).toBeCloseTo(h.history.mse[0] as number, 6);
    expect(h.epoch).toEqual([0, 1]); // patience 0 and a minDelta no epoch can meet: stops after the second
  });

  it('numTensors: stable across fit calls and predict', async () => {
    const { x, y } = data();
    const pipe = rr.pipeline(mlp(), { optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy', microBatches: 2 });
    await pipe.fit(x, y, { batchSize: 8, verbose: 0 });
    const before = tf.memory().numTensors;
    await pipe.fit(x, y, { batchSize: 8, epochs: 2, verbose: 0 });
    (await pipe.predict(x)).dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe("stages: 'auto' timing", () => {
  it('identical layers get one cost (the mean of their timings); a layer that differs keeps its own', async () => {
    const { layerCosts } = await import('../src/pipeline/cut.js');
    const m = tf.sequential();
    // Same class and shapes, different initializers and names: the same cost. The first layer
    // (another input width) and the last (another output width) differ.
    m.add(tf.layers.dense({ units: 16, inputShape: [8], kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }));
    for (let i = 0; i < 4; i++) m.add(tf.layers.dense({ units: 16, kernelInitializer: tf.initializers.glorotUniform({ seed: i + 2 }) }));
    m.add(tf.layers.dense({ units: 3 }));
    const c = layerCosts(tf as never, m as never);
    const L = m.layers.length;
    expect(c[0]).toBe(1); // timed, not counted
    const fb = Array.from(c.subarray(1, L + 1));
    const f = Array.from(c.subarray(L + 1));
    for (const costs of [fb, f]) {
      expect(new Set(costs.slice(1, 5)).size).toBe(1);
      expect(costs.every((x) => x > 0)).toBe(true);
    }
    m.dispose();
  });
});
