import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfData from '@tensorflow/tfjs-data';
import { RingInvalidArgError } from '../errors.js';
import { needData, needTf } from './tf.js';

/**
 * This rank's shard of a dataset: elements rank, rank + size, rank + 2·size, ... (as
 * tf.data's shard). Striding keeps each global batch's examples together: with a per-rank batch
 * of B/size, rank r's j-th batch holds the r-th stride of the global j-th batch of B.
 * Accepts an array, a tf.Tensor (sharded along axis 0) or a tf.data.Dataset.
 */
export function shard<T>(data: T[], rank: number, size: number): T[];
export function shard(data: TfCore.Tensor, rank: number, size: number): TfCore.Tensor;
export function shard<T extends TfCore.TensorContainer>(data: TfData.Dataset<T>, rank: number, size: number): TfData.Dataset<T>;
export function shard(data: unknown, rank: number, size: number): unknown {
  if (!Number.isSafeInteger(size) || size < 1) throw new RingInvalidArgError(`shard: size must be an integer >= 1, got ${size}`);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= size) throw new RingInvalidArgError(`shard: rank must be in 0..${size - 1}, got ${rank}`);
  if (Array.isArray(data)) return data.filter((_, i) => i % size === rank);
  const tf = needTf('shard');
  if (data instanceof tf.Tensor) {
    const n = data.shape[0] ?? 0;
    const idx: number[] = [];
    for (let i = rank; i < n; i += size) idx.push(i);
    return tf.tidy(() => tf.gather(data, tf.tensor1d(idx, 'int32')));
  }
  const ds = data as TfData.Dataset<TfCore.TensorContainer>;
  if (ds && typeof ds.iterator === 'function') {
    // tf.data.generator calls the function again for every iteration (every epoch).
    return needData('shard').generator(async function* () {
      const it = await ds.iterator();
      for (let i = 0; ; i++) {
        const r = await it.next();
        if (r.done) return;
        if (i % size === rank) yield r.value;
      }
    } as never);
  }
  throw new RingInvalidArgError('shard(data, rank, size): data must be an array, a tf.Tensor or a tf.data.Dataset');
}
