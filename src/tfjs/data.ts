import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfData from '@tensorflow/tfjs-data';
import { RingInvalidArgError } from '../errors.js';
import { needData, needTf } from './tf.js';

/** How shard() treats a length that does not divide by the number of ranks. */
export interface ShardOptions {
  /**
   * Drop the last (length % size) elements, so that every rank gets floor(length / size): the
   * same number of batches everywhere (otherwise some ranks run one batch more, and the others
   * wait for them in the next all-reduce).
   */
  dropRemainder?: boolean;
  /** Repeat elements from the start so that every rank gets ceil(length / size) (as torch's DistributedSampler). */
  pad?: boolean;
}

/**
 * This rank's shard of a dataset: elements rank, rank + size, rank + 2·size, ... (as
 * tf.data's shard). Striding keeps each global batch's examples together: with a per-rank batch
 * of B/size, rank r's j-th batch holds the r-th stride of the global j-th batch of B.
 * Accepts an array, a tf.Tensor (sharded along axis 0) or a tf.data.Dataset. With a length that
 * does not divide by `size`, ranks get different counts unless `dropRemainder` or `pad` is set.
 */
export function shard<T>(data: T[], rank: number, size: number, options?: ShardOptions): T[];
export function shard(data: TfCore.Tensor, rank: number, size: number, options?: ShardOptions): TfCore.Tensor;
export function shard<T extends TfCore.TensorContainer>(data: TfData.Dataset<T>, rank: number, size: number, options?: ShardOptions): TfData.Dataset<T>;
export function shard(data: unknown, rank: number, size: number, options: ShardOptions = {}): unknown {
  if (!Number.isSafeInteger(size) || size < 1) throw new RingInvalidArgError(`shard: size must be an integer >= 1, got ${size}`);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= size) throw new RingInvalidArgError(`shard: rank must be in 0..${size - 1}, got ${rank}`);
  const drop = flag('dropRemainder', options.dropRemainder);
  const pad = flag('pad', options.pad);
  if (drop && pad) throw new RingInvalidArgError('shard: options.dropRemainder and options.pad cannot both be set');
  /** The indices this rank takes out of n elements. */
  const indices = (n: number): number[] => {
    const per = drop ? Math.floor(n / size) : pad ? Math.ceil(n / size) : Math.floor(n / size) + (rank < n % size ? 1 : 0);
    return Array.from({ length: n === 0 ? 0 : per }, (_, k) => (rank + k * size) % n);
  };
  if (Array.isArray(data)) return indices(data.length).map((i) => data[i]);
  const tf = needTf('shard');
  if (data instanceof tf.Tensor) {
    const idx = indices(data.shape[0] ?? 0);
    return tf.tidy(() => tf.gather(data, tf.tensor1d(idx, 'int32')));
  }
  const ds = data as TfData.Dataset<TfCore.TensorContainer>;
  if (ds && typeof ds.iterator === 'function') {
    // tf.data.generator calls the function again for every iteration (every epoch). Elements go
    // by groups of `size`: this rank yields its element of each whole group; a last, partial group
    // is this rank's when it reaches that far (or: dropped; or: completed from the first group).
    return needData('shard').generator(async function* () {
      const it = await ds.iterator();
      const first: TfCore.TensorContainer[] = [];
      let held: TfCore.TensorContainer | undefined;
      let n = 0;
      for (; ; n++) {
        const r = await it.next();
        if (r.done) break;
        if (pad && n < size) first.push(r.value);
        if (n % size === rank) {
          if (!drop) yield r.value;
          else held = r.value;
        }
        // With dropRemainder, this rank's element goes out once its group of `size` is whole.
        if (drop && n % size === size - 1 && held !== undefined) {
          yield held;
          held = undefined;
        }
      }
      // Padding: the last group completed from the first elements (as the array case's indices).
      if (pad && n % size !== 0 && rank >= n % size) yield first[(rank - (n % size)) % first.length];
    } as never);
  }
  throw new RingInvalidArgError('shard(data, rank, size): data must be an array, a tf.Tensor or a tf.data.Dataset');
}

function flag(name: string, v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new RingInvalidArgError(`shard: options.${name} must be a boolean, got ${typeof v}`);
  return v;
}
