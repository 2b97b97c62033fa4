import type * as TfCore from '@tensorflow/tfjs-core';
import { broadcast } from '../api.js';
import { RingInvalidArgError } from '../errors.js';
import { needTf } from './tf.js';

/** A tf.Variable, or a tfjs-layers LayerVariable (model.weights). */
export type AnyVariable = { read?(): TfCore.Tensor; write?(t: TfCore.Tensor): void; assign?(t: TfCore.Tensor): void; shape: number[]; dtype: string; name: string };

function valueOf(v: AnyVariable): TfCore.Tensor {
  return (v.read ? v.read() : v) as TfCore.Tensor;
}

/**
 * Makes every rank's variables equal to rank `root`'s: one broadcast of all of them packed into
 * one buffer (float32 and int32 variables are sent separately, each in its own dtype).
 */
export async function broadcastVariables(vars: AnyVariable[], root = 0): Promise<void> {
  const tf = needTf('broadcastVariables');
  if (!Array.isArray(vars)) throw new RingInvalidArgError('broadcastVariables(vars, root): vars must be an array of variables');
  for (const dtype of ['float32', 'int32'] as const) {
    const group = vars.filter((v) => v.dtype === dtype);
    const other = vars.filter((v) => v.dtype !== 'float32' && v.dtype !== 'int32');
    if (other.length) throw new RingInvalidArgError(`broadcastVariables: variable '${other[0].name}' is ${other[0].dtype}; only float32 and int32 are supported`);
    if (group.length === 0) continue;
    const sizes = group.map((v) => v.shape.reduce((a, b) => a * b, 1));
    const packed = dtype === 'float32' ? new Float32Array(sizes.reduce((a, b) => a + b, 0)) : new Int32Array(sizes.reduce((a, b) => a + b, 0));
    let o = 0;
    group.forEach((v, i) => {
      packed.set(valueOf(v).dataSync() as Float32Array | Int32Array, o);
      o += sizes[i];
    });
    const got = await broadcast(packed, { root, name: `broadcastVariables:${dtype}` });
    o = 0;
    group.forEach((v, i) => {
      const t = tf.tensor(got.subarray(o, o + sizes[i]), v.shape, dtype);
      if (v.write) v.write(t);
      else v.assign!(t);
      t.dispose();
      o += sizes[i];
    });
  }
}

/** Makes an optimizer's state (Adam moments, iteration count, ...) equal to rank `root`'s. */
export async function broadcastOptimizerState(optimizer: TfCore.Optimizer, root = 0): Promise<void> {
  const tf = needTf('broadcastOptimizerState');
  let weights: Array<{ name: string; tensor: TfCore.Tensor }>;
  try {
    weights = await optimizer.getWeights();
  } catch {
    return; // an optimizer without state to share
  }
  if (weights.length === 0) return;
  const out: Array<{ name: string; tensor: TfCore.Tensor }> = [];
  for (const w of weights) {
    const data = w.tensor.dataSync();
    const typed = w.tensor.dtype === 'int32' ? Int32Array.from(data) : Float32Array.from(data);
    const got = await broadcast(typed, { root, name: `optimizerState:${w.name}` });
    out.push({ name: w.name, tensor: tf.tensor(got, w.tensor.shape, w.tensor.dtype === 'int32' ? 'int32' : 'float32') });
  }
  await optimizer.setWeights(out);
  tf.dispose(out.map((w) => w.tensor));
  tf.dispose(weights.map((w) => w.tensor));
}
