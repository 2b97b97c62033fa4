import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import { allgather, allreduce, rank, size } from '../api.js';
import { RingInvalidArgError, RingMismatchError } from '../errors.js';
import { foreignTfjsCopy, needLayers } from './tf.js';
import { broadcastOptimizerState, broadcastVariables } from './variables.js';

type Logs = Record<string, number | TfCore.Scalar>;

export interface LearningRateWarmupOptions {
  /** Epochs over which the learning rate ramps from lr/size to lr. Default 5 (as Horovod). */
  warmupEpochs?: number;
  /** Batches per epoch; default from model.fit's params (ceil(samples / batchSize)). */
  stepsPerEpoch?: number;
  /** The target learning rate; default the optimizer's at train begin. */
  initialLr?: number;
  /** Print the learning rate at the end of the warmup on rank 0. */
  verbose?: boolean;
}

interface LrOptimizer {
  learningRate?: number;
  setLearningRate?(lr: number): void;
  inner?: LrOptimizer;
}

function setLr(opt: LrOptimizer, lr: number): void {
  const o = opt.inner ?? opt;
  if (typeof o.setLearningRate === 'function') o.setLearningRate(lr);
  else o.learningRate = lr;
}

function getLr(opt: LrOptimizer): number {
  const o = opt.inner ?? opt;
  if (typeof o.learningRate !== 'number') throw new RingInvalidArgError('learningRateWarmup: the optimizer has no numeric learningRate');
  return o.learningRate;
}

/**
 * Every rank must run as many batches per epoch as the others: a rank with fewer goes on to the
 * next epoch's (or the end's) collectives while the others still all-reduce their extra batch's
 * gradients, and everyone waits until the timeout. Checked at train begin, on every rank alike.
 */
async function checkEvenBatches(params: unknown): Promise<void> {
  const p = (params ?? {}) as { steps?: number | null; samples?: number | null; batchSize?: number | null };
  const steps = p.steps ?? (p.samples != null ? Math.ceil(p.samples / (p.batchSize ?? 32)) : -1);
  const all = Array.from(await allgather(Int32Array.of(steps), { name: 'ringreduce:batchesPerEpoch' }));
  const known = all.filter((n) => n >= 0);
  if (new Set(known).size <= 1) return;
  const fewest = Math.min(...known);
  const per = all.map((n, r) => `rank ${r}: ${n < 0 ? 'unknown' : n}`).join(', ');
  throw new RingMismatchError(
    `rank ${rank()}: model.fit runs a different number of batches per epoch on each rank (${per}); the ranks with fewer would wait ` +
      `in the others' extra all-reduces until the timeout. Give every rank as many samples: rr.shard(x, rr.rank(), rr.size(), { dropRemainder: true }) ` +
      `(or { pad: true }), with the same batchSize everywhere`,
    { rank: rank(), ranks: all.flatMap((n, r) => (n !== fewest && n >= 0 ? [r] : [])), op: 'fit', field: 'batches' },
  );
}

let classes: ReturnType<typeof define> | undefined;

/** Defined on first use as subclasses of the application's tf.Callback (see tf.ts). */
function define() {
  const tfl = needLayers('ringreduce callbacks');
  type Model = TfLayers.LayersModel & { optimizer: TfCore.Optimizer };
  /**
   * The model.fit of another tfjs copy does not recognise these as callbacks: it wraps each in its
   * own CustomCallback and calls the hooks on that, without the model.
   */
  const mine = (self: unknown) => {
    if (!(self instanceof tfl.Callback)) throw foreignTfjsCopy("model.fit (which called ringreduce's callback)");
  };

  class BroadcastGlobalVariables extends tfl.Callback {
    constructor(private readonly root: number) {
      super();
    }
    override async onTrainBegin(): Promise<void> {
      mine(this);
      await checkEvenBatches(this.params);
      const model = this.model as unknown as Model;
      await broadcastVariables(model.weights as never, this.root);
      if (model.optimizer) await broadcastOptimizerState(model.optimizer, this.root);
    }
  }

  class MetricAverage extends tfl.Callback {
    override async onTrainBegin(): Promise<void> {
      mine(this);
      await checkEvenBatches(this.params);
    }
    override async onEpochEnd(_epoch: number, logs?: Logs): Promise<void> {
      if (!logs) return;
      const keys = Object.keys(logs).sort();
      const values = Float64Array.from(keys.map((k) => {
        const v = logs[k];
        return typeof v === 'number' ? v : (v as TfCore.Scalar).dataSync()[0];
      }));
      const avg = await allreduce(values, { op: 'average', name: `metricAverage:${keys.join(',')}` });
      keys.forEach((k, i) => (logs[k] = avg[i]));
    }
  }

  class LearningRateWarmup extends tfl.Callback {
    private target = 0;
    private steps = 0;
    private epoch = 0;
    private readonly warmupEpochs: number;
    constructor(private readonly o: LearningRateWarmupOptions) {
      super();
      this.warmupEpochs = o.warmupEpochs ?? 5;
      if (!(this.warmupEpochs > 0)) throw new RingInvalidArgError(`learningRateWarmup: warmupEpochs must be > 0, got ${this.warmupEpochs}`);
    }
    override async onTrainBegin(): Promise<void> {
      mine(this);
      const opt = (this.model as unknown as Model).optimizer as unknown as LrOptimizer;
      this.target = this.o.initialLr ?? getLr(opt);
      const p = this.params as { steps?: number; samples?: number; batchSize?: number };
      this.steps = this.o.stepsPerEpoch ?? p.steps ?? Math.ceil((p.samples ?? 0) / (p.batchSize ?? 32));
      if (!(this.steps > 0)) throw new RingInvalidArgError('learningRateWarmup: cannot tell the steps per epoch; pass options.stepsPerEpoch');
    }
    override async onEpochBegin(epoch: number): Promise<void> {
      this.epoch = epoch;
    }
    /** Horovod's schedule: lr(e) = target / size * (e * (size - 1) / warmupEpochs + 1), e fractional. */
    override async onBatchBegin(batch: number): Promise<void> {
      if (this.epoch >= this.warmupEpochs) return;
      const e = this.epoch + (batch + 1) / this.steps;
      const n = size();
      setLr((this.model as unknown as Model).optimizer as unknown as LrOptimizer, (this.target / n) * ((e * (n - 1)) / this.warmupEpochs + 1));
    }
    override async onEpochEnd(epoch: number): Promise<void> {
      if (epoch + 1 === Math.ceil(this.warmupEpochs)) {
        setLr((this.model as unknown as Model).optimizer as unknown as LrOptimizer, this.target);
        if (this.o.verbose && rank() === 0) console.log(`ringreduce: learning-rate warmup done after epoch ${epoch + 1}: lr = ${this.target}`);
      }
    }
  }
  /** Parameter servers: the model starts from the servers' weights (worker 0's initial ones, or a restored checkpoint's). */
  class PullServerWeights extends tfl.Callback {
    override async onTrainBegin(): Promise<void> {
      mine(this);
      const model = this.model as unknown as Model;
      const opt = model.optimizer as unknown as { pullServerWeights?(v: TfCore.Variable[]): Promise<void> };
      if (typeof opt?.pullServerWeights !== 'function') throw new RingInvalidArgError('pullServerWeights: the model\'s optimizer is no DistributedOptimizer with options.parameterServer');
      await opt.pullServerWeights(model.trainableWeights.map((w) => w.read() as TfCore.Variable));
    }
  }
  return { BroadcastGlobalVariables, MetricAverage, LearningRateWarmup, PullServerWeights };
}

/** tf.Callbacks for model.fit, as Horovod's Keras callbacks. */
export const callbacks = {
  /** At train begin, makes every rank's model weights and optimizer state equal to `root`'s. */
  broadcastGlobalVariables(root = 0): TfLayers.Callback {
    classes ??= define();
    return new classes.BroadcastGlobalVariables(root);
  },
  /** At each epoch end, replaces every metric in the logs with its average over ranks (keys sorted by name). */
  metricAverage(): TfLayers.Callback {
    classes ??= define();
    return new classes.MetricAverage();
  },
  /**
   * Parameter servers (DistributedOptimizer({ parameterServer })): at train begin, the model's
   * trainable weights become the servers' (worker 0's initial weights, or a restored checkpoint's),
   * on every worker: the parameter-server counterpart of broadcastGlobalVariables.
   */
  pullServerWeights(): TfLayers.Callback {
    classes ??= define();
    return new classes.PullServerWeights();
  },
  /** Ramps the learning rate from lr/size to lr over the first epochs (Goyal et al.; Horovod's schedule). */
  learningRateWarmup(options: LearningRateWarmupOptions = {}): TfLayers.Callback {
    classes ??= define();
    return new classes.LearningRateWarmup(options);
  },
};
