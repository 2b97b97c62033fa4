// Data-parallel MNIST with ringreduce: every rank trains the same CNN on its shard of the data,
// and the DistributedOptimizer averages the gradients over the ring after every batch.
//
//   npx ringrun -np 2 node examples/mnist/train.js [--epochs 5] [--batch-size 32]
//
// Alone (`node examples/mnist/train.js`) it is an ordinary single-process run (size 1).
// Exits 1 if the final test accuracy is below --min-accuracy (default 0.95). See README.md.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs'; // or '@tensorflow/tfjs-node' / '@tensorflow/tfjs-node-gpu'
import * as rr from 'ringreduce';
import { installFastConvGrad } from './fast-conv-grad.js';
import { buildCnn, loadMnist, mnistOptions, numberOption, oneHot, toTensors } from './model.js';

const env = process.env;
const { values: a } = parseArgs({
  options: {
    epochs: { type: 'string', default: env.EPOCHS ?? '5' },
    'batch-size': { type: 'string', default: env.BATCH_SIZE ?? '32' }, // per rank
    lr: { type: 'string', default: env.LR ?? '0.002' }, // per rank: the optimizer gets lr * size
    'warmup-epochs': { type: 'string', default: env.WARMUP_EPOCHS ?? '1' },
    backend: { type: 'string', default: env.TFJS_BACKEND ?? 'cpu' },
    'no-fast-conv': { type: 'boolean', default: env.FAST_CONV === '0' },
    ...mnistOptions(env),
  },
});
if (a.help) {
  console.log(`usage: [ringrun -np N] node examples/mnist/train.js [--epochs 5] [--batch-size 32 (per rank)] [--lr 0.002 (per rank)]
       [--warmup-epochs 1] [--train 8000] [--test 2000] [--seed 1] [--min-accuracy 0.95] [--backend cpu] [--no-fast-conv]
env: EPOCHS BATCH_SIZE LR WARMUP_EPOCHS TRAIN_COUNT TEST_COUNT SEED MIN_ACCURACY TFJS_BACKEND FAST_CONV=0`);
  process.exit(0);
}
const num = (name, min) => numberOption(a, name, min);
const epochs = num('epochs', 1);
const batchSize = num('batch-size', 1);
const lr = num('lr', 0);
const warmupEpochs = num('warmup-epochs', 0);
const minAccuracy = num('min-accuracy', 0);

await rr.init();
const rank = rr.rank();
const size = rr.size();
const log = (...m) => rank === 0 && console.log(...m);

tf.enableProdMode(); // also silences tfjs' "install tfjs-node" banner on every rank
if (!(await tf.setBackend(a.backend))) throw new Error(`tfjs backend '${a.backend}' is not available (is its package imported?)`);
const fastConv = tf.getBackend() === 'cpu' && !a['no-fast-conv'] && installFastConvGrad(tf);

// Every rank loads the same split (seeded shuffle), then keeps its strided shard of the training
// set. Equal shard lengths keep the ranks' step counts equal (each step is one collective).
const data = loadMnist({ train: num('train', 1), test: num('test', 1), seed: num('seed', 0) });
const train = data.train.slice(0, data.train.length - (data.train.length % size));
// Reshuffled every epoch with a seeded generator (tf.data's shuffle with a seed), so that a run
// repeats exactly: model.fit's own shuffle draws on Math.random. Every rank's shard has as many
// batches (the training set is a multiple of the ranks), as ringreduce's callbacks check.
const mine = tf.data
  .array(rr.shard(train, rank, size).map((e) => ({ xs: e.input, ys: oneHot(e.label) })))
  .shuffle(train.length, `mnist-${a.seed}`)
  .batch(batchSize)
  .map(({ xs, ys }) => ({ xs: xs.reshape([-1, 28, 28, 1]), ys }))
  .repeat(); // fitDataset takes batchesPerEpoch batches per epoch from one endless iterator
const test = toTensors(tf, data.test);

const model = buildCnn(tf, num('seed', 0));
// Horovod's recipe: scale the learning rate by the number of ranks (the global batch is
// size x batchSize) and ramp it up over the first epoch(s) (learningRateWarmup).
const opt = new rr.DistributedOptimizer(tf.train.adam(lr * size), { op: 'average' });
model.compile({ optimizer: opt, loss: 'categoricalCrossentropy', metrics: ['accuracy'] });

const steps = Math.ceil(train.length / size / batchSize);
log(
  `mnist: ${size} rank(s), tfjs ${tf.version.tfjs} backend '${tf.getBackend()}'${fastConv ? ' (fast Conv2DBackpropFilter)' : ''}, ringreduce kernels '${rr.kernels.backend}'\n` +
    `  data: ${train.length} train (${train.length / size} per rank), ${data.test.length} test; model: ${model.countParams()} params\n` +
    `  epochs ${epochs}, batch ${batchSize} per rank (global ${batchSize * size}), ${steps} steps/epoch, ` +
    `adam lr ${lr} x ${size} = ${lr * size}${warmupEpochs > 0 && size > 1 ? `, warmup ${warmupEpochs} epoch(s)` : ''}`,
);

let epochStart = 0;
const report = new tf.CustomCallback({
  onEpochBegin: async () => {
    epochStart = performance.now();
  },
  // Runs after metricAverage (callbacks run in list order): the logs hold the averages over ranks.
  onEpochEnd: async (epoch, logs) => {
    const s = (performance.now() - epochStart) / 1000;
    log(
      `epoch ${epoch + 1}/${epochs}: loss ${logs.loss.toFixed(4)}  acc ${(logs.acc ?? logs.accuracy).toFixed(4)}  ` +
        `(${s.toFixed(1)} s, ${(train.length / s).toFixed(0)} examples/s over all ranks)`,
    );
  },
});
const callbacks = [rr.callbacks.broadcastGlobalVariables(0), rr.callbacks.metricAverage()];
if (warmupEpochs > 0 && size > 1) callbacks.push(rr.callbacks.learningRateWarmup({ warmupEpochs }));
callbacks.push(report);

const tTrain = performance.now();
await model.fitDataset(mine, { epochs, batchesPerEpoch: steps, verbose: 0, callbacks });
const trainSec = (performance.now() - tTrain) / 1000;

// Every rank evaluates the full test set: the weights are bit-identical on all ranks, so the
// accuracies must be too (min == max is a check that the ranks stayed in sync).
const accuracy = tf.tidy(() => {
  const predicted = model.predict(test.xs, { batchSize: 500 }).argMax(-1);
  return predicted.equal(test.ys.argMax(-1)).mean().dataSync()[0];
});
const [lo, hi] = [
  (await rr.allreduce(Float64Array.of(-accuracy), { op: 'max', name: 'acc-min' }))[0] * -1,
  (await rr.allreduce(Float64Array.of(accuracy), { op: 'max', name: 'acc-max' }))[0],
];
const ok = accuracy >= minAccuracy;
log(
  `test accuracy ${accuracy.toFixed(4)} on ${data.test.length} digits ` +
    `(${lo === hi ? `identical on all ${size} rank(s)` : `RANKS DISAGREE: min ${lo} max ${hi}`}); ` +
    `training ${trainSec.toFixed(1)} s, wall ${(performance.now() / 1000).toFixed(1)} s since rank 0's process started; ` +
    `${ok ? 'PASS' : 'FAIL'} (>= ${minAccuracy})`,
);
await rr.shutdown();
process.exit(ok && lo === hi ? 0 : 1);
