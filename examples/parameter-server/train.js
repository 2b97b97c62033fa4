// MNIST with parameter servers: the CNN of examples/mnist, its weights held by ringreduce's
// parameter servers; workers push gradients and pull weights, in sync, async or stale mode. One
// worker can be slowed (--slow-worker) to see what a straggler costs each mode. --mode ring runs
// the same job over the ring (DistributedOptimizer without servers), for comparison.
//
//   npx ringrun -np 3 --servers 1 node examples/parameter-server/train.js --mode async --slow-worker 2
//   npx ringrun -np 3 node examples/parameter-server/train.js --mode ring --slow-worker 2
//
// Every mode processes the same number of examples: --epochs passes over the training set in all.
// Ring and sync run them in lock step (each worker its shard); async and stale stop when the
// servers have applied that many worker steps in all, so fast workers take more of them
// (as TF's global_step). Async workers each draw from the whole training set, in their own order:
// with a shard each, the fast workers would repeat their thirds while the straggler's third went
// mostly unseen (stale workers keep their shards: the bound keeps them at one pace).
// Exits 1 if the test accuracy is below --min-accuracy (default 0.95).
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs'; // or '@tensorflow/tfjs-node' / '@tensorflow/tfjs-node-gpu'
import * as rr from 'ringreduce';
import { installFastConvGrad } from '../mnist/fast-conv-grad.js';
import { buildCnn, loadMnist, mnistOptions, numberOption, oneHot, toTensors } from '../mnist/model.js';

const env = process.env;
const { values: a } = parseArgs({
  options: {
    mode: { type: 'string', default: env.PS_MODE ?? 'async' }, // sync | async | stale | ring
    staleness: { type: 'string', default: env.STALENESS ?? '4' },
    'slow-worker': { type: 'string', default: env.SLOW_WORKER ?? '-1' }, // this rank runs --slow-factor x slower
    'slow-factor': { type: 'string', default: env.SLOW_FACTOR ?? '3' },
    epochs: { type: 'string', default: env.EPOCHS ?? '3' },
    'batch-size': { type: 'string', default: env.BATCH_SIZE ?? '32' }, // per worker
    lr: { type: 'string', default: env.LR ?? '0.002' },
    compression: { type: 'string', default: env.COMPRESSION ?? 'none' },
    ...mnistOptions(env),
  },
});
if (a.help) {
  console.log(`usage: ringrun -np N [--servers S] node examples/parameter-server/train.js [--mode sync|async|stale|ring] [--staleness 4]
       [--slow-worker RANK] [--slow-factor 3] [--epochs 3] [--batch-size 32 (per worker)] [--lr 0.002] [--compression none|fp16|bf16]
       [--train 8000] [--test 2000] [--seed 1] [--min-accuracy 0.95]
env: PS_MODE STALENESS SLOW_WORKER SLOW_FACTOR EPOCHS BATCH_SIZE LR COMPRESSION TRAIN_COUNT TEST_COUNT SEED MIN_ACCURACY`);
  process.exit(0);
}
const num = (name, min) => numberOption(a, name, min);
const mode = a.mode;
if (!['sync', 'async', 'stale', 'ring'].includes(mode)) throw new Error(`--mode must be sync, async, stale or ring, got '${mode}'`);
const batchSize = num('batch-size', 1);
const slowWorker = Number(a['slow-worker']);
const slowFactor = num('slow-factor', 1);
const minAccuracy = num('min-accuracy', 0);

await rr.init();
const rank = rr.rank();
const size = rr.size();
const log = (...m) => rank === 0 && console.log(...m);
tf.enableProdMode();
await tf.setBackend('cpu');
const fastConv = installFastConvGrad(tf);

const data = loadMnist({ train: num('train', 1), test: num('test', 1), seed: num('seed', 0) });
const train = data.train.slice(0, data.train.length - (data.train.length % size));
const lockStep = mode === 'ring' || mode === 'sync';
const mine = tf.data
  .array((mode === 'async' ? train : rr.shard(train, rank, size)).map((e) => ({ xs: e.input, ys: oneHot(e.label) })))
  .shuffle(train.length, `mnist-${a.seed}-${rank}`)
  .batch(batchSize)
  .map(({ xs, ys }) => ({ xs: xs.reshape([-1, 28, 28, 1]), ys }))
  .repeat();
const test = toTensors(tf, data.test);
const model = buildCnn(tf, num('seed', 0));

// The ring and sync modes average the workers' gradients into one update per step: Horovod's
// learning rate x size. Async and stale apply each worker's gradient as one update: the plain rate.
const lr = num('lr', 0) * (mode === 'ring' || mode === 'sync' ? size : 1);
const options = { compression: a.compression };
if (mode !== 'ring') options.parameterServer = { mode, staleness: num('staleness', 0) };
const opt = new rr.DistributedOptimizer(tf.train.adam(lr), options);
model.compile({ optimizer: opt, loss: 'categoricalCrossentropy', metrics: ['accuracy'] });

const stepsPerEpoch = Math.ceil(train.length / size / batchSize); // per worker, in lock step
const target = num('epochs', 1) * stepsPerEpoch * size; // worker steps in all
log(
  `parameter-server mnist: mode ${mode}${mode === 'stale' ? ` (staleness ${a.staleness})` : ''}, ${size} workers` +
    `${mode === 'ring' ? '' : `, ${env.RINGREDUCE_PS_SERVERS ?? '?'} server(s)`}` +
    `${slowWorker >= 0 ? `, rank ${slowWorker} slowed ${slowFactor}x` : ''}; ${model.countParams()} params; ` +
    `${target} worker steps of ${batchSize} examples in all; adam lr ${lr}${fastConv ? '; fast Conv2DBackpropFilter' : ''}`,
);

// The straggler: after each batch it sleeps (factor - 1) x the time the batch took it, so its
// steps take factor x as long.
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let batchStart = 0;
let steps = 0;
const pace = new tf.CustomCallback({
  onBatchBegin: async () => {
    batchStart = performance.now();
  },
  onBatchEnd: async () => {
    steps++;
    if (rank === slowWorker) await sleep((performance.now() - batchStart) * (slowFactor - 1));
    // Async and stale: stop once the servers have applied the job's worker steps, whoever took them.
    if ((mode === 'async' || mode === 'stale') && opt.parameterServerStats().globalUpdates >= target) model.stopTraining = true;
  },
});
const callbacks = [mode === 'ring' ? rr.callbacks.broadcastGlobalVariables(0) : rr.callbacks.pullServerWeights(), pace];
const t0 = performance.now();
await model.fitDataset(mine, { epochs: lockStep ? num('epochs', 1) : 1, batchesPerEpoch: lockStep ? stepsPerEpoch : target, verbose: 0, callbacks });
const mySec = (performance.now() - t0) / 1000;
// The job's wall time: until the last worker is done.
const wall = (await rr.allreduce(Float64Array.of(mySec), { op: 'max', name: 'wall' }))[0];
// The model is the servers' (async workers end with the weights of their own last pull).
if (mode !== 'ring') await opt.pullServerWeights(model.trainableWeights.map((w) => w.read()));
const accuracy = tf.tidy(() => model.predict(test.xs, { batchSize: 500 }).argMax(-1).equal(test.ys.argMax(-1)).mean().dataSync()[0]);
const stats = mode === 'ring' ? undefined : opt.parameterServerStats();
const perRank = await rr.allgather(Float64Array.of(steps, stats?.maxStaleness ?? 0, stats?.maxLag ?? 0));
const rows = Array.from({ length: size }, (_, r) => `rank ${r}: ${perRank[3 * r]} steps${stats ? `, max staleness ${perRank[3 * r + 1]}, max lag ${perRank[3 * r + 2]}` : ''}`);
const ok = accuracy >= minAccuracy;
log(`  ${rows.join('; ')}`);
log(
  `RESULT ${JSON.stringify({ mode, workers: size, slowWorker, slowFactor, wallSec: +wall.toFixed(2), examplesPerSec: Math.round((target * batchSize) / wall), accuracy: +accuracy.toFixed(4), maxStaleness: Math.max(...rows.map((_, r) => perRank[3 * r + 1])) })}`,
);
log(`test accuracy ${accuracy.toFixed(4)} on ${data.test.length} digits, training wall ${wall.toFixed(1)} s; ${ok ? 'PASS' : 'FAIL'} (>= ${minAccuracy})`);
await rr.shutdown();
process.exit(ok ? 0 : 1);
