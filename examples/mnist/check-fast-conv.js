// Checks fast-conv-grad.js against tfjs' own Conv2DBackpropFilter (CPU backend) on assorted
// shapes, strides and paddings, and times both. Exits 1 on a mismatch.
//   node examples/mnist/check-fast-conv.js
import * as tf from '@tensorflow/tfjs';
import { installFastConvGrad } from './fast-conv-grad.js';

tf.enableProdMode();
await tf.setBackend('cpu');
// [x shape, filter shape, strides, padding]
const cases = [
  [[4, 28, 28, 1], [5, 5, 1, 16], 2, 'valid'], // the example's first layer
  [[4, 12, 12, 16], [3, 3, 16, 32], 2, 'valid'], // and its second
  [[3, 13, 13, 8], [3, 3, 8, 16], 1, 'same'],
  [[2, 10, 11, 3], [4, 3, 3, 5], [2, 3], 'same'],
  [[2, 9, 9, 2], [3, 3, 2, 4], 1, 'valid'],
  [[2, 8, 8, 3], [2, 2, 3, 4], 2, 'same'],
];
const inputs = cases.map(([xs, ws, s, p]) => {
  const x = tf.randomNormal(xs);
  const w = tf.randomNormal(ws);
  return { x, w, s, p, dy: tf.randomNormal(tf.conv2d(x, w, s, p).shape) };
});
const dW = ({ x, w, dy, s, p }) => tf.grad((ww) => tf.conv2d(x, ww, s, p).mul(dy).sum())(w);
const time = (f) => {
  const t = performance.now();
  const r = f();
  return [r, performance.now() - t];
};

const [stock, tStock] = time(() => inputs.map(dW));
installFastConvGrad(tf);
const [fast, tFast] = time(() => inputs.map(dW));
let worst = 0;
stock.forEach((g, i) => {
  const rel = tf.tidy(() => tf.max(tf.abs(tf.sub(g, fast[i]))).dataSync()[0] / tf.max(tf.abs(g)).dataSync()[0]);
  worst = Math.max(worst, rel);
  console.log(`x ${cases[i][0]} filter ${cases[i][1]} strides ${cases[i][2]} ${cases[i][3]}: max |difference| / max |dW| = ${rel.toExponential(2)}`);
});
console.log(`stock kernel ${tStock.toFixed(0)} ms, fast kernel ${tFast.toFixed(0)} ms for all cases; worst relative difference ${worst.toExponential(2)}`);
process.exit(worst < 1e-5 ? 0 : 1);
