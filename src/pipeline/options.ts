import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import { COMPRESSIONS, isCompression, type Compression } from '../compression/registry.js';
import { RingInvalidArgError } from '../errors.js';
import type { ProcessGroup } from '../group.js';
import { DistributedOptimizer } from '../tfjs/optimizer.js';
import { needTf } from '../tfjs/tf.js';
import { MAX_MICRO_BATCHES } from './comm.js';
import { LOSSES, METRICS, type LossOrMetricFn } from './loss.js';
import { SCHEDULES, type ScheduleKind } from './schedules.js';

type CallbackLike = TfLayers.CustomCallbackArgs | { setParams(p: unknown): void; [hook: string]: unknown };

export interface PipelineOptions {
  /** 'auto' (default): cuts balanced by measured forward+backward time per layer; or cut points, e.g. [3, 7]: layers 0-2 | 3-6 | 7-. */
  stages?: 'auto' | number[];
  /** Micro-batches per step; must divide fit's batchSize. Default 4. */
  microBatches?: number;
  /** '1f1b' (default, PipeDream-Flush: bounded activation memory) or 'gpipe'. */
  schedule?: ScheduleKind;
  /**
   * The optimizer each stage applies to its own weights (e.g. tf.train.adam(1e-3)). Data x
   * pipeline: a DistributedOptimizer over this stage's replicas (`{ group: replicas }`, see
   * pipelineGroups), which averages the stage's gradients with the same stage of the other
   * pipelines through the comm worker, compression included.
   */
  optimizer: TfCore.Optimizer;
  /** A loss model.compile knows by name (see LOSSES), or (yTrue, yPred) => per-example losses. */
  loss: string | LossOrMetricFn;
  /** Metrics, logged as model.fit logs them: 'accuracy' (as 'acc'), 'mse', 'mae'. */
  metrics?: string[];
  /** The ranks of this pipeline, one stage per rank in group order (default: the world). */
  group?: ProcessGroup;
  /**
   * Data x pipeline, shorthand: this stage's counterparts in the other pipelines. The optimizer is
   * then wrapped in `new DistributedOptimizer(optimizer, { group: replicas, compression })`.
   * Not with an optimizer that is a DistributedOptimizer already (its group says it).
   */
  replicas?: ProcessGroup;
  /** Wire compression of the replicas' average with the `replicas` shorthand: 'none' (default), 'fp16', 'bf16'. */
  compression?: Compression;
}

export interface PipelineFitArgs {
  /** Examples per step of this pipeline (default 32). */
  batchSize?: number;
  /** Default 1. */
  epochs?: number;
  /** Reshuffle the examples every epoch (default true), the same way on every stage. */
  shuffle?: boolean;
  /** 1 (default): one line per epoch on the pipeline's first rank; 0: quiet. */
  verbose?: 0 | 1;
  /** tf.Callback objects or CustomCallbackArgs ({ onEpochEnd, ... }), as model.fit's. */
  callbacks?: CallbackLike | CallbackLike[];
}

export interface PipelinePredictArgs {
  /** Examples per forward pass of a stage (default 32). */
  batchSize?: number;
}

/** The options after their checks, defaults filled in. */
export type ResolvedPipelineOptions = Required<Omit<PipelineOptions, 'group' | 'replicas'>> & Pick<PipelineOptions, 'group' | 'replicas'>;

const bad = (what: string) => new RingInvalidArgError(`pipeline: ${what}`, { op: 'pipeline' });
const isInt = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;

/** rr.pipeline's model and options checked (typed errors naming the option), with the defaults. */
export function resolvePipelineOptions(model: TfLayers.Sequential, options: PipelineOptions): ResolvedPipelineOptions {
  if (options === null || typeof options !== 'object') throw bad('options must be an object');
  const m = model as unknown as { layers?: unknown; getClassName?: () => string };
  if (!m || !Array.isArray(m.layers) || typeof m.getClassName !== 'function' || m.getClassName() !== 'Sequential') {
    throw bad('model must be a tf.Sequential (the same one built on every rank): a pipeline cuts its list of layers');
  }
  const stages = options.stages ?? 'auto';
  if (stages !== 'auto' && !(Array.isArray(stages) && stages.every((c) => Number.isSafeInteger(c)))) {
    throw bad(`options.stages must be 'auto' or an array of integer cut points (e.g. [3, 7]), got ${JSON.stringify(stages)}`);
  }
  const microBatches = options.microBatches ?? 4;
  if (!isInt(microBatches, 1) || microBatches > MAX_MICRO_BATCHES) {
    throw bad(`options.microBatches must be an integer in 1..${MAX_MICRO_BATCHES}, got ${JSON.stringify(microBatches)}`);
  }
  const schedule = options.schedule ?? '1f1b';
  if (!SCHEDULES.includes(schedule)) throw bad(`options.schedule must be 'gpipe' or '1f1b', got ${JSON.stringify(schedule)}`);
  const tf = needTf('pipeline');
  if (!(options.optimizer instanceof tf.Optimizer)) throw bad('options.optimizer must be a tfjs optimizer, e.g. tf.train.adam(1e-3)');
  const loss = options.loss;
  if (typeof loss !== 'function' && !(LOSSES as readonly unknown[]).includes(loss)) {
    throw bad(`options.loss must be one of ${LOSSES.map((l) => `'${l}'`).join(', ')} or a function (yTrue, yPred) => per-example losses, got ${JSON.stringify(loss)}`);
  }
  const metrics = options.metrics ?? [];
  if (!Array.isArray(metrics) || !metrics.every((x) => (METRICS as readonly unknown[]).includes(x))) {
    throw bad(`options.metrics must be an array of ${METRICS.map((l) => `'${l}'`).join(', ')}, got ${JSON.stringify(metrics)}`);
  }
  const compression = options.compression ?? 'none';
  if (!isCompression(compression)) throw bad(`options.compression must be ${COMPRESSIONS.map((c) => `'${c}'`).join(', ')}, got ${JSON.stringify(compression)}`);
  for (const k of ['group', 'replicas'] as const) {
    const g = options[k] as unknown;
    if (g !== undefined && (g === null || typeof (g as ProcessGroup).ranks !== 'function')) throw bad(`options.${k} must be a ProcessGroup (from newGroup), got ${String(g)}`);
  }
  let optimizer = options.optimizer;
  let replicas = options.replicas;
  if (optimizer instanceof DistributedOptimizer) {
    if (replicas || options.compression !== undefined) {
      throw bad('options.replicas and options.compression are a shorthand for wrapping a plain optimizer; this one is a DistributedOptimizer already: give it { group: replicas, compression } instead');
    }
    // Over the world it would try to average different layers' gradients across stages.
    if (!optimizer.group) {
      throw bad("options.optimizer is a DistributedOptimizer over the world, but a pipeline's stages hold different layers: give it { group: replicas } (see pipelineGroups), or pass the plain optimizer");
    }
    replicas = optimizer.group;
  } else if (replicas) {
    optimizer = new DistributedOptimizer(optimizer, { group: replicas, compression, name: 'ringreduce:pipeline/' });
  }
  return { stages, microBatches, schedule, optimizer, loss, metrics, compression, group: options.group, replicas };
}
