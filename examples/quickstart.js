// Data-parallel training of a small tfjs model: the README's quick start. Run with
//   npx ringrun -np 2 node examples/quickstart.js
import * as tf from '@tensorflow/tfjs';
import * as rr from 'ringreduce';

await rr.init();
// Data: y = 3x - 1 with noise, the same 4,097 samples on every rank (a fixed seed), then this rank's shard.
const xs = tf.randomUniform([4097, 1], -1, 1, 'float32', 42);
const ys = xs.mul(3).sub(1).add(tf.randomNormal([4097, 1], 0, 0.05, 'float32', 7));
const even = { dropRemainder: true }; // every rank runs the same number of batches
const model = tf.sequential({ layers: [tf.layers.dense({ units: 8, activation: 'relu', inputShape: [1] }), tf.layers.dense({ units: 1 })] });
model.compile({ optimizer: new rr.DistributedOptimizer(tf.train.adam(0.02)), loss: 'meanSquaredError' });
const history = await model.fit(rr.shard(xs, rr.rank(), rr.size(), even), rr.shard(ys, rr.rank(), rr.size(), even), {
  batchSize: 64,
  epochs: 10,
  verbose: 0,
  callbacks: [
    rr.callbacks.broadcastGlobalVariables(0), // the same initial weights everywhere
    rr.callbacks.metricAverage(), // epoch logs averaged over the ranks
    new tf.CustomCallback({ onEpochEnd: (epoch, logs) => rr.rank() === 0 && console.log(`epoch ${epoch + 1}: loss ${logs.loss.toFixed(4)}`) }),
  ],
});
const [w] = await model.predict(tf.tensor2d([[0.5]])).data();
console.log(`rank ${rr.rank()}/${rr.size()}: final loss ${history.history.loss.at(-1).toFixed(4)}, f(0.5) = ${w.toFixed(3)} (want 0.5)`);
await rr.shutdown();
