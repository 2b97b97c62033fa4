// Pipeline-parallel MNIST with ringreduce: the CNN of examples/mnist cut into stages, one per
// rank; micro-batches flow forward through the stages and gradients backward (1F1B by default).
//
//   npx ringrun -np 2 node examples/pipeline/train.js                    # 2 stages
//   npx ringrun -np 4 node examples/pipeline/train.js --pipelines 2      # data x pipeline: 2 pipelines of 2 stages
//
// Alone (`node examples/pipeline/train.js`) it is a pipeline of one stage: model.fit, in effect.
// Exits 1 if the final test accuracy is below --min-accuracy (default 0.95). See README.md.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs'; // or '@tensorflow/tfjs-node' / '@tensorflow/tfjs-node-gpu'
import * as rr from 'ringreduce';
import { installFastConvGrad } from '../mnist/fast-conv-grad.js';
import { buildCnn, loadMnist, mnistOptions, numberOption, toTensors } from '../mnist/model.js';

const env = process.env;
const { values: a } = parseArgs({
  options: {
    epochs: { type: 'string', default: env.EPOCHS ?? '5' },
    'batch-size': { type: 'string', default: env.BATCH_SIZE ?? '64' }, // per pipeline
    'micro-batches': { type: 'string', default: env.MICRO_BATCHES ?? '4' },
    schedule: { type: 'string', default: env.SCHEDULE ?? '1f1b' },
    stages: { type: 'string', default: env.STAGES ?? 'auto' }, // or cut points: "2" or "1,3"
    pipelines: { type: 'string', default: env.PIPELINES ?? '1' },
    lr: { type: 'string', default: env.LR ?? '0.004' }, // per pipeline: the optimizer gets lr * pipelines
    ...mnistOptions(env),
  },
});
if (a.help) {
  console.log(`usage: [ringrun -np N] node examples/pipeline/train.js [--epochs 5] [--batch-size 64 (per pipeline)] [--micro-batches 4]
       [--schedule 1f1b|gpipe] [--stages auto|CUTS (e.g. 2 or 1,3)] [--pipelines 1] [--lr 0.004 (per pipeline)]
       [--train 8000] [--test 2000] [--seed 1] [--min-accuracy 0.95]
env: EPOCHS BATCH_SIZE MICRO_BATCHES SCHEDULE STAGES PIPELINES LR TRAIN_COUNT TEST_COUNT SEED MIN_ACCURACY`);
  process.exit(0);
}
const num = (name, min) => numberOption(a, name, min);
const epochs = num('epochs', 1);
const batchSize = num('batch-size', 1);
const pipelines = num('pipelines', 1);
const seed = num('seed', 0);
const minAccuracy = num('min-accuracy', 0);

await rr.init();
const size = rr.size();
if (size % pipelines !== 0) throw new Error(`--pipelines ${pipelines} must divide the number of ranks (${size})`);
tf.enableProdMode();
await tf.setBackend('cpu');
const fastConv = installFastConvGrad(tf);

// Every rank builds the same model from the same seed: each keeps and trains its own stage's layers.
const model = buildCnn(tf, seed);
// One pipeline: the world. Several: pipelineGroups makes the pipelines and, per stage, the group of
// its replicas in the other pipelines, whose gradients a DistributedOptimizer over them averages
// before every update.
const { group, replicas, pipeline: p } = pipelines > 1 ? await rr.pipelineGroups(size / pipelines) : { pipeline: 0 };
const adam = tf.train.adam(num('lr', 0) * pipelines);
const pipe = rr.pipeline(model, {
  stages: a.stages === 'auto' ? 'auto' : a.stages.split(',').map(Number),
  microBatches: num('micro-batches', 1),
  schedule: a.schedule,
  optimizer: replicas ? new rr.DistributedOptimizer(adam, { group: replicas }) : adam,
  loss: 'categoricalCrossentropy',
  metrics: ['accuracy'],
  ...(group ? { group } : {}),
});

// Every rank loads the same split (seeded shuffle); with several pipelines, each takes its shard.
const data = loadMnist({ train: num('train', 1), test: num('test', 1), seed });
const train = data.train.slice(0, data.train.length - (data.train.length % pipelines));
const { xs, ys } = toTensors(tf, rr.shard(train, p, pipelines));
const test = toTensors(tf, data.test);

await pipe.build(); // agree, cut (printed once), keep this rank's layers
const first = rr.rank() === 0;
if (first) {
  console.log(
    `mnist pipeline: ${size} rank(s) = ${pipelines} pipeline(s) x ${size / pipelines} stage(s), tfjs ${tf.version.tfjs} '${tf.getBackend()}'` +
      `${fastConv ? ' (fast Conv2DBackpropFilter)' : ''}; ${train.length} train, ${data.test.length} test; ${model.countParams()} params; ` +
      `epochs ${epochs}, batch ${batchSize} per pipeline, ${a['micro-batches']} micro-batches, ${a.schedule}`,
  );
}
console.log(`rank ${rr.rank()}: stage ${pipe.stats().stage} owns ${pipe.stageLayers().join(', ')}`);

const t0 = performance.now();
// The only changes from model.fit: the call goes to the pipeline, and every rank makes it.
await pipe.fit(xs, ys, { batchSize, epochs, verbose: 1 });
const trainSec = (performance.now() - t0) / 1000;

const probs = await pipe.predict(test.xs, { batchSize: 500 }); // the full predictions, on every rank
const accuracy = tf.tidy(() => probs.argMax(-1).equal(test.ys.argMax(-1)).mean().dataSync()[0]);
const s = pipe.stats();
const ok = accuracy >= minAccuracy;
console.log(
  `rank ${rr.rank()}: test accuracy ${accuracy.toFixed(4)} on ${data.test.length} digits; training ${trainSec.toFixed(1)} s ` +
    `(${((train.length * epochs) / trainSec).toFixed(0)} examples/s); stage ${s.stage} waited ${((100 * s.waitMs) / s.stepMs).toFixed(1)}% of its steps; ` +
    `${ok ? 'PASS' : 'FAIL'} (>= ${minAccuracy})`,
);
await rr.shutdown();
process.exit(ok ? 0 : 1);
