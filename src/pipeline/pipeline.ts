import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import { deserializeError, RingError, RingInvalidArgError } from '../errors.js';
import { DistributedOptimizer } from '../tfjs/optimizer.js';
import { needLayers, needTf } from '../tfjs/tf.js';
import { agree, type LayerDesc } from './agreement.js';
import { groupComm, MAX_MICRO_BATCHES, worldComm, type StageComm } from './comm.js';
import { lossFn, metricFn, type LossOrMetricFn } from './loss.js';
import { batches, cutProblem, microBatchSizes, permute, stageRanges } from './partition.js';
import { calibrate } from './calibrate.js';
import { chooseCuts, type LayerCosts } from './cut.js';
import { resolvePipelineOptions, type PipelineFitArgs, type PipelineOptions, type PipelinePredictArgs, type ResolvedPipelineOptions } from './options.js';
import { StageRunner } from './stage.js';

export type { PipelineFitArgs, PipelineOptions, PipelinePredictArgs } from './options.js';

type Tensor = TfCore.Tensor;
type Layer = TfLayers.layers.Layer;
type Model = TfLayers.Sequential;
type Logs = Record<string, number>;

/** Layers whose training forward draws randomness or updates state: a second (re-materialised) forward would differ. */
const TRAINING_ONLY = new Set(['Dropout', 'SpatialDropout1D', 'SpatialDropout2D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout', 'BatchNormalization']);

const bad = (what: string) => new RingInvalidArgError(`pipeline: ${what}`, { op: 'pipeline' });
const isInt = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;

interface Built {
  comm: StageComm;
  replicas?: StageComm;
  runner: StageRunner;
  cuts: number[];
  owned: Layer[];
  last: boolean;
  model: LayerDesc[];
  /** How the cut was chosen, for the line rank 0 prints; with 'auto', the layers' timed costs. */
  how: string;
  costs?: LayerCosts;
}

/**
 * A model split into stages across the ranks of a process set (pipeline parallelism): each rank
 * owns a contiguous run of the model's layers and trains them in place; micro-batches flow forward
 * through the stages and gradients backward, in a GPipe or 1F1B schedule (see schedules.ts).
 */
export class Pipeline {
  private readonly o: ResolvedPipelineOptions;
  private built: Promise<Built> | undefined;
  private round = 0;

  constructor(
    private readonly model: Model,
    options: PipelineOptions,
  ) {
    this.o = resolvePipelineOptions(model, options);
  }

  /** Names of the layers this rank owns (after build(), fit() or predict(); at once when the cut points are given). */
  stageLayers(): string[] {
    const layers = this.model.layers;
    if (this.o.stages === 'auto') {
      if (!this.cutsKnown) throw bad("stageLayers(): with stages: 'auto' the cut is measured when the pipeline is built: await pipe.build() (or fit/predict) first");
      return this.cutsKnown.owned.map((l) => l.name);
    }
    const comm = this.o.group ? groupComm(this.o.group) : worldComm();
    const problem = cutProblem(this.o.stages, layers.length, comm.size);
    if (problem) throw bad(problem);
    const [a, b] = stageRanges(this.o.stages, layers.length)[comm.rank];
    return layers.slice(a, b).map((l) => l.name);
  }
  private cutsKnown: Built | undefined;
  /** Rows of a micro-batch, for 'auto' to time the layers on (set by the first fit). */
  private timingRows: number | undefined;

  /**
   * This rank's stage since the pipeline was built: training steps, the time their schedules took
   * (forward and backward passes with their transfers, not the update), the part of it spent
   * waiting for other stages (waitMs), and the time spent after the schedule in the step's closing
   * exchange, where a stage that finished early waits for the last one's loss (syncMs). Over a
   * stretch of training, (waitMs + syncMs) / wall time is the stage's idle fraction, the measured
   * bubble (bench/pipeline.mjs); everything else, the update included, is work.
   */
  stats(): { stage: number; stages: number; steps: number; stepMs: number; waitMs: number; syncMs: number } {
    const b = this.cutsKnown;
    if (!b) return { stage: -1, stages: 0, steps: 0, stepMs: 0, waitMs: 0, syncMs: 0 };
    return { stage: b.comm.rank, stages: b.comm.size, ...b.runner.timing };
  }

  /** Agrees on the model and options with the other ranks, cuts the model and keeps this rank's layers. Idempotent. */
  build(): Promise<void> {
    return this.finish().then(() => undefined);
  }

  /** The agreed cut, other stages' weights still held (fit may still move the cut: calibrate). */
  private prepare(): Promise<Built> {
    return (this.built ??= this.setup());
  }

  /** The cut made final: printed, other stages' layers' weights disposed, replicas' weights made one. */
  private finish(): Promise<Built> {
    return (this.finished ??= this.prepare().then((b) => this.finalize(b)));
  }
  private finished: Promise<Built> | undefined;

  private describe(layers: Layer[]): LayerDesc[] {
    return layers.map((l) => ({
      name: l.name,
      cls: l.getClassName(),
      out: (Array.isArray(l.outputShape[0]) ? [-1] : l.outputShape) as Array<number | null>,
      weights: l.weights.map((w) => w.shape as number[]),
    }));
  }

  private async setup(): Promise<Built> {
    const tf = needTf('pipeline');
    const layers = this.model.layers;
    const comm = this.o.group ? groupComm(this.o.group) : worldComm();
    const replicas = this.o.replicas ? groupComm(this.o.replicas) : undefined;
    const S = comm.size;
    const model = this.describe(layers);
    const options = {
      stages: this.o.stages,
      microBatches: this.o.microBatches,
      schedule: this.o.schedule,
      loss: typeof this.o.loss === 'string' ? this.o.loss : 'a function',
      metrics: this.o.metrics,
      replicas: replicas ? replicas.size : 0,
      compression: this.o.compression,
    };
    let error: string | undefined;
    if (this.o.stages !== 'auto') error = cutProblem(this.o.stages, layers.length, S);
    else if (S > layers.length) error = `${S} stages but the model has only ${layers.length} layer(s): a stage needs at least one layer`;
    const multi = model.findIndex((l) => l.out[0] === -1);
    if (!error && multi >= 0) error = `layer ${multi} ('${model[multi].name}') has several outputs; a pipeline passes one tensor between layers`;
    await agree(comm, 'pipeline', { error, model, options, call: {} });
    if (replicas) await agree(replicas, 'pipeline replicas', { model, options: { ...options, stage: comm.rank, stages: S }, call: {} });

    // Rank 0's micro-batch rows when fit builds the pipeline (every rank agrees on the cut it sends).
    const chosen = await chooseCuts(tf, this.model, this.o.stages, comm, this.timingRows);
    let cuts = chosen.cuts;
    if (replicas) cuts = Array.from(await replicas.broadcast(Int32Array.from(cuts), 0, 'ringreduce:pipeline:cuts'));
    const ranges = stageRanges(cuts, layers.length);
    // Checked from agreed facts only, so that every rank raises it alike.
    for (let s = 0; s < S - 1; s++) {
      const l = layers.slice(...ranges[s]).find((x) => TRAINING_ONLY.has(x.getClassName()));
      if (l) {
        throw new RingInvalidArgError(
          `rank ${comm.worldRank(comm.rank)}: pipeline: layer '${l.name}' (${l.getClassName()}) is on stage ${s}, not the last: a stage's backward pass re-runs its forward pass, ` +
            `which would draw other random numbers or update its statistics twice; move it to the last stage with explicit cut points, or remove it`,
          { rank: comm.worldRank(comm.rank), op: 'pipeline' },
        );
      }
    }
    return { comm, replicas, model, how: chosen.how, ...(chosen.costs ? { costs: chosen.costs } : {}), ...this.stageAt(tf, comm, cuts) };
  }

  /** This rank's stage at `cuts`: its layers and their runner (the timing starts at zero). */
  private stageAt(tf: typeof TfCore, comm: StageComm, cuts: number[]): Pick<Built, 'runner' | 'owned' | 'cuts' | 'last'> {
    const layers = this.model.layers;
    const S = comm.size;
    const [a, b] = stageRanges(cuts, layers.length)[comm.rank];
    const owned = layers.slice(a, b);
    const inShape = a > 0 ? (layers[a - 1].outputShape as number[]).slice(1) : [];
    const outShape = (layers[b - 1].outputShape as number[]).slice(1);
    const runner = new StageRunner({ tf, layers: owned, stage: comm.rank, stages: S, comm, inShape, outShape });
    return { runner, owned, cuts, last: comm.rank === S - 1 };
  }

  private async finalize(b: Built): Promise<Built> {
    const tf = needTf('pipeline');
    const { comm, replicas, cuts, owned } = b;
    const layers = this.model.layers;
    const ranges = stageRanges(cuts, layers.length);
    if (comm.rank === 0 && (!replicas || replicas.rank === 0)) {
      const text = ranges.map(([x, y], s) => `stage ${s} (rank ${comm.worldRank(s)}): layers ${x}-${y - 1} (${layers.slice(x, y).map((l) => l.name).join(', ')})`).join(' | ');
      console.log(`ringreduce: pipeline of ${comm.size} stage(s), ${this.o.schedule}, ${this.o.microBatches} micro-batches, cut [${cuts.join(', ')}] (${b.how}): ${text}`);
    }
    // Compiled, as model.fit would have it: callbacks read model.optimizer and set model.stopTraining.
    const compiled = this.model as unknown as { optimizer?: unknown };
    if (!compiled.optimizer) this.model.compile({ optimizer: this.o.optimizer, loss: this.o.loss as never, metrics: this.o.metrics });
    // Each stage keeps only its own layers' weights (and so only their optimizer state).
    const [a, z] = ranges[comm.rank];
    layers.forEach((l, i) => {
      if (i < a || i >= z) for (const w of l.weights) w.dispose();
    });
    if (replicas) {
      // The same stage of every pipeline starts from the first pipeline's weights.
      for (const w of owned.flatMap((l) => l.weights)) {
        const v = w.read();
        const got = await replicas.broadcast(Float32Array.from(v.dataSync() as Float32Array), 0, `ringreduce:pipeline:init:${comm.rank}`);
        const t = tf.tensor(got, v.shape, 'float32');
        w.write(t);
        t.dispose();
      }
    }
    this.cutsKnown = b;
    return b;
  }

  /** 'auto', before fit's first step: see calibrate.ts. */
  private async calibrate(tf: typeof TfCore, b: Built, xs: Tensor, ys: Tensor, batchSize: number, loss: LossOrMetricFn, metrics: LossOrMetricFn[]): Promise<void> {
    const restage = (cuts: number[]) => void Object.assign(b, this.stageAt(tf, b.comm, cuts));
    const run = { schedule: this.o.schedule, microBatches: this.o.microBatches, nextRound: () => this.round++ };
    await calibrate(tf, b, restage, run, { xs, ys, batchSize, loss, metrics });
  }

  /** Turns a lost peer or a timeout into the same error naming the stage it was. */
  private named(e: unknown, b: Built | undefined): unknown {
    if (!(e instanceof RingError) || !b || !['RING_ERR_PEER_LOST', 'RING_ERR_TIMEOUT'].includes(e.code)) return e;
    const members = Array.from({ length: b.comm.size }, (_, s) => b.comm.worldRank(s));
    const lost = (e.details.ranks ?? []).filter((r) => members.includes(r));
    const who = lost.length ? lost.map((r) => `stage ${members.indexOf(r)} (rank ${r})`).join(', ') : 'another rank';
    const verb = e.code === 'RING_ERR_PEER_LOST' ? 'is gone' : 'did not answer in time';
    const err = deserializeError({ code: e.code, message: `pipeline stage ${b.comm.rank}: ${who} ${verb}: ${e.message}`, details: e.details });
    return err;
  }

  /** Trains like model.fit (one input, one target): every rank passes the same xs and ys (a pipeline's shard of them, with replicas). */
  async fit(xs: Tensor, ys: Tensor, args: PipelineFitArgs = {}): Promise<TfLayers.History> {
    const tf = needTf('pipeline.fit');
    const tfl = needLayers('pipeline.fit');
    if (args === null || typeof args !== 'object') throw bad('fit(xs, ys, args): args must be an object');
    const batchSize = args.batchSize ?? 32;
    const epochs = args.epochs ?? 1;
    const shuffle = args.shuffle ?? true;
    const verbose = args.verbose ?? 1;
    if (!isInt(batchSize, 1)) throw bad(`fit: args.batchSize must be an integer >= 1, got ${JSON.stringify(batchSize)}`);
    if (!isInt(epochs, 0)) throw bad(`fit: args.epochs must be an integer >= 0, got ${JSON.stringify(epochs)}`);
    if (typeof shuffle !== 'boolean') throw bad(`fit: args.shuffle must be a boolean, got ${JSON.stringify(shuffle)}`);
    if (verbose !== 0 && verbose !== 1) throw bad(`fit: args.verbose must be 0 or 1, got ${JSON.stringify(verbose)}`);
    if (!(xs instanceof tf.Tensor) || !(ys instanceof tf.Tensor)) throw bad('fit(xs, ys): xs and ys must be tf.Tensors');
    if (Number.isSafeInteger(batchSize / this.o.microBatches)) this.timingRows ??= batchSize / this.o.microBatches;
    const b = await this.prepare();
    const samples = xs.shape[0] ?? 0;
    let error: string | undefined;
    if (batchSize % this.o.microBatches !== 0) {
      error = `fit: batchSize ${batchSize} is not a multiple of microBatches ${this.o.microBatches}: each micro-batch must have batchSize / microBatches examples`;
    } else if (ys.shape[0] !== samples) error = `fit: xs has ${samples} examples but ys has ${ys.shape[0]}`;
    const call = { samples, batchSize, epochs, shuffle };
    const label = 'pipeline.fit';
    await agree(b.comm, label, { error, model: [], options: {}, call });
    if (b.replicas) await agree(b.replicas, `${label} replicas`, { model: [], options: {}, call: { samples, batchSize, epochs } });
    const loss = lossFn(tfl, this.o.loss);
    const metrics = this.o.metrics.map((m) => metricFn(tfl, m, this.o.loss));
    const keys = ['loss', ...metrics.map(([k]) => k)];
    if (!this.finished && !this.model.layers.some((l) => TRAINING_ONLY.has(l.getClassName()))) {
      await this.calibrate(tf, b, xs, ys, batchSize, loss, metrics.map(([, f]) => f)).catch((e) => {
        throw this.named(e, b);
      });
    }
    await this.finish();
    const seed = (await b.comm.broadcast(Uint32Array.of((Math.random() * 2 ** 32) >>> 0), 0, 'ringreduce:pipeline:seed'))[0];

    const history = new tfl.History();
    const user = args.callbacks === undefined ? [] : Array.isArray(args.callbacks) ? args.callbacks : [args.callbacks];
    const list = new tfl.CallbackList([
      ...user.map((c) => (typeof (c as { setParams?: unknown }).setParams === 'function' ? c : new tfl.CustomCallback(c as TfLayers.CustomCallbackArgs))),
      history,
    ] as never);
    const steps = Math.ceil(samples / batchSize);
    list.setParams({ epochs, initialEpoch: 0, samples, steps, batchSize, verbose, doValidation: false, metrics: keys });
    list.setModel(this.model as never);
    this.model.stopTraining = false;
    const talk = verbose === 1 && b.comm.rank === 0 && (!b.replicas || b.replicas.rank === 0);

    try {
      await list.onTrainBegin();
      for (let epoch = 0; epoch < epochs; epoch++) {
        const t0 = performance.now();
        await list.onEpochBegin(epoch);
        const order = Int32Array.from({ length: samples }, (_, i) => i);
        if (shuffle) permute(order, seed + epoch);
        const totals = new Array<number>(keys.length).fill(0);
        const all = batches(samples, batchSize);
        for (let bi = 0; bi < all.length; bi++) {
          const [start, n] = all[bi];
          await list.onBatchBegin(bi, { batch: bi, size: n });
          const idx = shuffle ? tf.tensor1d(order.subarray(start, start + n), 'int32') : undefined;
          const pick = (t: Tensor) => (idx ? tf.gather(t, idx) : tf.slice(t, start, n));
          const x = b.comm.rank === 0 ? pick(xs) : undefined;
          const y = b.last ? pick(ys) : undefined;
          let values: number[];
          try {
            values = await this.step(tf, b, x, y, microBatchSizes(n, this.o.microBatches), loss, metrics.map(([, f]) => f), keys.length);
          } finally {
            tf.dispose([...(x ? [x] : []), ...(y ? [y] : []), ...(idx ? [idx] : [])]);
          }
          const logs: Logs = { batch: bi, size: n };
          keys.forEach((k, i) => {
            logs[k] = values[i];
            totals[i] += values[i] * n;
          });
          await list.onBatchEnd(bi, logs);
        }
        const epochLogs: Logs = {};
        keys.forEach((k, i) => (epochLogs[k] = totals[i] / Math.max(1, samples)));
        await list.onEpochEnd(epoch, epochLogs);
        if (talk) {
          const s = (performance.now() - t0) / 1000;
          console.log(`Epoch ${epoch + 1}/${epochs}: ${keys.map((k) => `${k}=${epochLogs[k].toFixed(4)}`).join(' ')} (${s.toFixed(1)} s)`);
        }
        if (this.model.stopTraining) break;
      }
      await list.onTrainEnd();
    } catch (e) {
      throw this.named(e, b);
    }
    return history;
  }

  /** One step: the schedule, the replicas' average, the update, and the batch's [loss, ...metrics] on every rank. */
  private async step(tf: typeof TfCore, b: Built, x: Tensor | undefined, y: Tensor | undefined, sizes: number[], loss: LossOrMetricFn, metrics: LossOrMetricFn[], nStats: number): Promise<number[]> {
    const round = this.round++;
    const { grads, stats } = await b.runner.trainStep({ round, schedule: this.o.schedule, sizes, x, y, loss, metrics });
    try {
      const vars = b.runner.vars.filter((v) => grads.has(v.name));
      const update = Object.fromEntries(vars.map((v) => [v.name, grads.get(v.name)!]));
      // With replicas, a DistributedOptimizer over them: the comm worker averages, then it applies.
      // (Every replica of a stage has the same variables: all of them skip a stage without any.)
      const opt = this.o.optimizer;
      if (vars.length > 0 && opt instanceof DistributedOptimizer) await opt.applyGradientsAsync(update);
      else if (vars.length > 0) opt.applyGradients(update);
    } finally {
      tf.dispose([...grads.values()]);
    }
    // The loss and metrics come from the last stage; with replicas, averaged over the pipelines.
    const s0 = performance.now();
    let values = await b.comm.broadcast(Float64Array.from(stats ?? new Array<number>(nStats).fill(0)), b.comm.size - 1, 'ringreduce:pipeline:logs');
    b.runner.timing.syncMs += performance.now() - s0;
    if (b.replicas && b.replicas.size > 1) values = await b.replicas.allreduce(values, { op: 'average', name: 'ringreduce:pipeline:logs' });
    return Array.from(values);
  }

  /** The model's predictions for xs, in full, on every rank of the pipeline. */
  async predict(xs: Tensor, args: PipelinePredictArgs = {}): Promise<Tensor> {
    const tf = needTf('pipeline.predict');
    if (args === null || typeof args !== 'object') throw bad('predict(xs, args): args must be an object');
    const batchSize = args.batchSize ?? 32;
    if (!isInt(batchSize, 1)) throw bad(`predict: args.batchSize must be an integer >= 1, got ${JSON.stringify(batchSize)}`);
    if (!(xs instanceof tf.Tensor)) throw bad('predict(xs): xs must be a tf.Tensor');
    const b = await this.finish();
    const samples = xs.shape[0] ?? 0;
    await agree(b.comm, 'pipeline.predict', { model: [], options: {}, call: { samples, batchSize } });
    const chunks = batches(samples, batchSize);
    const round = this.round;
    this.round += Math.max(1, Math.ceil(chunks.length / MAX_MICRO_BATCHES));
    const outShape = (this.model.layers.at(-1)!.outputShape as number[]).slice(1);
    const per = outShape.reduce((p, q) => p * q, 1);
    try {
      const mine = await b.runner.predict(round, chunks, b.comm.rank === 0 ? xs : undefined);
      const all = await b.comm.broadcast(mine ?? new Float32Array(samples * per), b.comm.size - 1, 'ringreduce:pipeline:predictions');
      return tf.tensor(all, [samples, ...outShape], 'float32');
    } catch (e) {
      throw this.named(e, b);
    }
  }
}

/** Splits `model` into pipeline stages over the ranks of `options.group` (default: the world). See Pipeline. */
export function pipeline(model: TfLayers.Sequential, options: PipelineOptions): Pipeline {
  return new Pipeline(model, options);
}


