import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import { RingInvalidArgError } from '../errors.js';
import type { StageComm } from './comm.js';
import { MAX_MICRO_BATCHES } from './comm.js';
import type { LossOrMetricFn } from './loss.js';
import { computeOrder, type Compute, type ScheduleKind } from './schedules.js';
import { Transfers } from './transfers.js';

type Tensor = TfCore.Tensor;
type Layer = TfLayers.layers.Layer;

/** Receives posted ahead of the compute that needs them, counted in compute actions. */
const LOOKAHEAD = 2;

export interface StageSpec {
  tf: typeof TfCore;
  /** This stage's layers, in model order. */
  layers: Layer[];
  stage: number;
  stages: number;
  comm: StageComm;
  /** Shape of one example's input to this stage (the previous stage's output); unused on stage 0. */
  inShape: number[];
  /** Shape of one example's output of this stage. */
  outShape: number[];
}

export interface StepInput {
  round: number;
  schedule: ScheduleKind;
  /** Micro-batch sizes (sum: the batch). */
  sizes: number[];
  /** The batch's inputs (stage 0) and targets (last stage). */
  x?: Tensor;
  y?: Tensor;
  /** Last stage: the loss (per example) and the metrics. */
  loss?: LossOrMetricFn;
  metrics?: LossOrMetricFn[];
}

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

/**
 * One stage of a pipeline: runs its layers forward on micro-batches, backward with the gradient
 * that comes back from the next stage, and sums its weights' gradients over a step.
 *
 * The backward pass runs the stage's forward again under tfjs's tape (`engine().gradients` with
 * the received dy): tfjs keeps no tape across calls, so the forward pass that fed the next stage
 * left none. This is GPipe's re-materialisation: a stage keeps only each micro-batch's input until
 * its backward pass, never every layer's activations; it costs one forward pass more per
 * micro-batch on every stage but the last, which computes forward, loss and backward in one pass.
 */
export class StageRunner {
  /** The stage's trainable variables, in layer order. */
  readonly vars: TfCore.Variable[];
  /** Training steps run, their time, and the part of it spent waiting for other stages. */
  /** See Pipeline.stats (syncMs is counted there, around the step's closing exchange). */
  readonly timing = { steps: 0, stepMs: 0, waitMs: 0, syncMs: 0 };
  private readonly last: boolean;

  constructor(private readonly s: StageSpec) {
    this.vars = s.layers.flatMap((l) => l.trainableWeights.map((w) => w.read() as TfCore.Variable));
    this.last = s.stage === s.stages - 1;
  }

  /** The stage's layers applied to x (within the caller's tidy or tape). */
  apply(x: Tensor, training: boolean): Tensor {
    let y = x;
    for (const l of this.s.layers) y = l.apply(y, { training }) as Tensor;
    return y;
  }

  private activation(t: Tensor, what: string): Float32Array {
    if (t.dtype !== 'float32') {
      throw new RingInvalidArgError(`pipeline: stage ${this.s.stage}'s ${what} is ${t.dtype}; what passes between stages must be float32`, { op: 'pipeline' });
    }
    return t.dataSync() as Float32Array;
  }

  /**
   * One training step: the schedule's actions for this stage, then the gradients summed over the
   * micro-batches (the loss of each is its examples' loss over the whole batch, so the sum is
   * the batch's gradient). Returns the gradients by variable name (the caller disposes them) and,
   * on the last stage, [loss, ...metrics] of the batch.
   */
  async trainStep(p: StepInput): Promise<{ grads: Map<string, Tensor>; stats?: number[] }> {
    const { tf, stage, stages, comm } = this.s;
    const M = p.sizes.length;
    const total = p.sizes.reduce((a, b) => a + b, 0);
    const offsets = p.sizes.map((_, i) => p.sizes.slice(0, i).reduce((a, b) => a + b, 0));
    const order = computeOrder(p.schedule, stage, stages, M);
    const t = new Transfers(comm, p.round);
    const inputs = new Map<number, Tensor>();
    const grads = new Map<string, Tensor>();
    const stats = this.last ? new Array<number>(1 + (p.metrics?.length ?? 0)).fill(0) : undefined;
    const inLen = (mb: number) => p.sizes[mb] * prod(this.s.inShape);
    const outLen = (mb: number) => p.sizes[mb] * prod(this.s.outShape);
    const needs = (c: Compute): [number, 'act' | 'grad', number] | undefined =>
      c.op === 'F' ? (stage > 0 ? [stage - 1, 'act', inLen(c.mb)] : undefined) : !this.last ? [stage + 1, 'grad', outLen(c.mb)] : undefined;
    const accumulate = (gs: Tensor[]) => {
      gs.forEach((g, i) => {
        const name = this.vars[i].name;
        if (g == null) return;
        const prev = grads.get(name);
        if (!prev) grads.set(name, g);
        else {
          grads.set(name, tf.add(prev, g));
          tf.dispose([prev, g]);
        }
      });
    };
    const t0 = performance.now();
    let waitMs = 0;
    const wait = async <T>(w: Promise<T>): Promise<T> => {
      const w0 = performance.now();
      try {
        return await w;
      } finally {
        waitMs += performance.now() - w0;
      }
    };
    const input = async (mb: number): Promise<Tensor> => {
      if (stage === 0) return tf.slice(p.x!, offsets[mb], p.sizes[mb]);
      const buf = await wait(t.take(stage - 1, mb, 'act', inLen(mb)));
      return tf.tensor(buf, [p.sizes[mb], ...this.s.inShape], 'float32');
    };
    try {
      for (let k = 0; k < order.length; k++) {
        for (const c of order.slice(k, k + 1 + LOOKAHEAD)) {
          const n = needs(c);
          if (n) t.post(n[0], c.mb, n[1], n[2]);
        }
        const { op, mb } = order[k];
        if (op === 'F' && this.last) continue; // the last stage's forward runs within its backward
        if (op === 'F') {
          const x = await input(mb);
          inputs.set(mb, x);
          const out = tf.tidy(() => this.apply(x, true));
          t.send(this.activation(out, 'output'), stage + 1, mb, 'act');
          out.dispose();
          continue;
        }
        const x = this.last ? await input(mb) : inputs.get(mb)!;
        inputs.delete(mb);
        const wrt: Tensor[] = stage > 0 ? [x, ...this.vars] : [...this.vars];
        if (wrt.length === 0) {
          x.dispose();
          continue; // a first stage without weights: nothing to compute backward
        }
        let value: Tensor;
        let gs: Tensor[];
        let pred: Tensor | undefined;
        let y: Tensor | undefined;
        if (this.last) {
          y = tf.slice(p.y!, offsets[mb], p.sizes[mb]);
          const yy = y;
          ({ value, grads: gs } = tf.engine().gradients(
            () => {
              const out = this.apply(x, true);
              pred = tf.keep(out);
              return tf.div(tf.sum(p.loss!(yy, out)), total) as TfCore.Scalar;
            },
            wrt,
            undefined,
            true,
          ));
        } else {
          const dy = tf.tensor(await wait(t.take(stage + 1, mb, 'grad', outLen(mb))), [p.sizes[mb], ...this.s.outShape], 'float32');
          ({ value, grads: gs } = tf.engine().gradients(() => this.apply(x, true), wrt, dy, true));
          dy.dispose();
        }
        if (stage > 0) {
          t.send(this.activation(gs[0], 'input gradient'), stage - 1, mb, 'grad');
          gs[0].dispose();
          gs = gs.slice(1);
        }
        accumulate(gs);
        if (stats) {
          stats[0] += value.dataSync()[0];
          p.metrics?.forEach((m, i) => {
            stats[i + 1] += tf.tidy(() => tf.div(tf.sum(m(y!, pred!)), total).dataSync()[0]);
          });
        }
        tf.dispose([value, x, ...(pred ? [pred] : []), ...(y ? [y] : [])]);
      }
      await wait(t.finish());
    } catch (e) {
      tf.dispose([...inputs.values(), ...grads.values()]);
      throw e;
    }
    this.timing.steps++;
    this.timing.stepMs += performance.now() - t0;
    this.timing.waitMs += waitMs;
    return { grads, stats };
  }

  /**
   * Forward passes of `chunks` (start, size) of x, pipelined: stage 0 slices them from x, the
   * others receive them, the last returns every output in one array (the others undefined).
   * Uses rounds round..round + ceil(chunks / MAX_MICRO_BATCHES) - 1.
   */
  async predict(round: number, chunks: Array<[number, number]>, x?: Tensor): Promise<Float32Array | undefined> {
    const { tf, stage } = this.s;
    const inPer = prod(this.s.inShape);
    const outPer = prod(this.s.outShape);
    const total = chunks.reduce((a, [, n]) => a + n, 0);
    const result = this.last ? new Float32Array(total * outPer) : undefined;
    const rounds = new Map<number, Transfers>();
    const at = (j: number): [Transfers, number] => {
      const r = round + Math.floor(j / MAX_MICRO_BATCHES);
      if (!rounds.has(r)) rounds.set(r, new Transfers(this.s.comm, r));
      return [rounds.get(r)!, j % MAX_MICRO_BATCHES];
    };
    for (let j = 0; j < chunks.length; j++) {
      if (stage > 0) {
        for (let k = j; k < Math.min(chunks.length, j + 1 + LOOKAHEAD); k++) {
          const [tk, mb] = at(k);
          tk.post(stage - 1, mb, 'act', chunks[k][1] * inPer);
        }
      }
      const [start, n] = chunks[j];
      const [tj, mb] = at(j);
      const input = stage === 0 ? tf.slice(x!, start, n) : tf.tensor(await tj.take(stage - 1, mb, 'act', n * inPer), [n, ...this.s.inShape], 'float32');
      const out = tf.tidy(() => this.apply(input, false));
      input.dispose();
      if (result) result.set(this.activation(out, 'output'), start * outPer);
      else tj.send(this.activation(out, 'output'), stage + 1, mb, 'act');
      out.dispose();
    }
    for (const tr of rounds.values()) await tr.finish();
    return result;
  }
}
