import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import type { StageComm } from './comm.js';
import { balance, cutProblem, stageRanges } from './partition.js';

type Tensor = TfCore.Tensor;
type Layer = TfLayers.layers.Layer;

/** Rows of the batch on which 'auto' times the layers, unless fit says how large a micro-batch is. */
export const TIMING_ROWS = 16;

/**
 * Where to cut: the given cut points, or ('auto') rank 0's timing of every layer, broadcast so
 * that every rank cuts alike. A layer costs forward+backward+forward on a stage that
 * re-materialises its forward pass (all but the last) and forward+backward on the last.
 * `rows`: how many examples a micro-batch has (fit knows it): a layer's forward and backward do
 * not scale alike with the rows, and the cut should balance what the stages will really run.
 * Returns the cuts and how they were chosen, for the line rank 0 prints.
 */
export async function chooseCuts(
  tf: typeof TfCore,
  model: TfLayers.Sequential,
  stages: 'auto' | number[],
  comm: StageComm,
  rows = TIMING_ROWS,
): Promise<{ cuts: number[]; how: string; costs?: LayerCosts }> {
  if (stages !== 'auto') return { cuts: stages, how: 'given' };
  if (comm.size === 1) return { cuts: [], how: 'one stage' };
  const layers = model.layers;
  const L = layers.length;
  const local = comm.rank === 0 ? layerCosts(tf, model, rows) : new Float64Array(2 * L + 1);
  const costs = await comm.broadcast(local, 0, 'ringreduce:pipeline:costs');
  const fb = Array.from(costs.subarray(1, L + 1));
  const f = Array.from(costs.subarray(L + 1));
  const cuts = balance(fb.map((c, i) => c + f[i]), comm.size, fb);
  const how =
    costs[0] === 1
      ? `auto, by measured ms forward+backward (forward): ${fb.map((c, i) => `${c.toFixed(2)} (${f[i].toFixed(2)})`).join(', ')}`
      : `auto, by parameters (timing failed): ${fb.join(', ')}`;
  return costs[0] === 1 ? { cuts, how, costs: { fb, f } } : { cuts, how };
}

/** Per layer, ms of forward+backward (fb) and of forward alone (f), from layerCosts. */
export interface LayerCosts {
  fb: number[];
  f: number[];
}

/**
 * A better cut than `cuts`, given `busy`: each stage's measured ms of work per step at `cuts`
 * (Pipeline's calibrate), or undefined if no cut point moved by one or two layers is predicted to
 * make the slowest stage 1% faster. The prediction: a stage's work is what its layers cost
 * (`costs`, timed alone, re-run forward included on all but the last stage) times one factor for
 * the whole pipeline (how much slower a layer runs inside the pipeline than alone, from the
 * measured total), plus the stage's own remainder, measured (hand-offs, the loss): moving a
 * layer moves its cost, not the remainder.
 */
export function proposeCut(cuts: readonly number[], busy: readonly number[], costs: LayerCosts): number[] | undefined {
  const L = costs.fb.length;
  const S = cuts.length + 1;
  const layerMs = (c: readonly number[]) => stageRanges(c, L).map(([a, b], s) => costs.fb.slice(a, b).reduce((t, x, i) => t + x + (s === S - 1 ? 0 : costs.f[a + i]), 0));
  const now = layerMs(cuts);
  const total = now.reduce((a, b) => a + b, 0);
  if (!(total > 0) || busy.length !== S || !busy.every((t) => Number.isFinite(t) && t >= 0)) return undefined;
  const factor = busy.reduce((a, b) => a + b, 0) / total;
  const rest = busy.map((t, s) => t - factor * now[s]);
  const slowest = (c: readonly number[]) => Math.max(...layerMs(c).map((m, s) => rest[s] + factor * m));
  let best: number[] | undefined;
  let bestMs = 0.99 * Math.max(...busy);
  for (let k = 0; k < cuts.length; k++) {
    for (const d of [-2, -1, 1, 2]) {
      const c = cuts.map((x, j) => (j === k ? x + d : x));
      if (cutProblem(c, L, S)) continue;
      const ms = slowest(c);
      if (ms < bestMs) (best = c), (bestMs = ms);
    }
  }
  return best;
}

/**
 * Identical layers (same class, configuration apart from the name and initializers, weight and
 * output shapes) cost
 * the same: each gets the mean of their timings, in both halves of `out`. A few milliseconds per
 * layer vary by 2x from one timing to the next on a busy machine, and the cut between a stack of
 * equal layers should not follow that noise.
 */
function evenOut(layers: Layer[], out: Float64Array): void {
  const L = layers.length;
  const kinds = new Map<string, number[]>();
  layers.forEach((l, i) => {
    // How a layer's weights start, are penalised or bounded does not change what a pass costs.
    const config = Object.entries(l.getConfig()).filter(([k]) => k !== 'name' && !/(Initializer|Regularizer|Constraint)$/.test(k));
    const key = JSON.stringify([l.getClassName(), config, l.inputSpec?.map((s) => s.shape) ?? null, l.weights.map((w) => w.shape), l.outputShape]);
    kinds.set(key, [...(kinds.get(key) ?? []), i]);
  });
  for (const same of kinds.values()) {
    if (same.length < 2) continue;
    for (const half of [1, L + 1]) {
      const mean = same.reduce((t, i) => t + out[half + i], 0) / same.length;
      for (const i of same) out[half + i] = mean;
    }
  }
}

/**
 * [1, ms forward+backward per layer..., ms forward per layer...] from timing each layer on a
 * small batch, or [0, parameters per layer..., zeros...] if that fails (e.g. an integer input).
 */
export function layerCosts(tf: typeof TfCore, model: TfLayers.Sequential, rows = TIMING_ROWS): Float64Array {
  const layers = model.layers;
  const L = layers.length;
  const out = new Float64Array(2 * L + 1);
  const time = (f: () => void) => {
    const t0 = performance.now();
    tf.tidy(f);
    return performance.now() - t0;
  };
  const backward = (l: Layer, x: Tensor) => () => {
    const vars = l.trainableWeights.map((w) => w.read());
    const { value, grads } = tf.engine().gradients(() => tf.sum(l.apply(x, { training: true }) as Tensor), [x, ...vars], undefined, true);
    value.dataSync();
    grads.forEach((g) => g?.dataSync());
  };
  const forward = (l: Layer, x: Tensor) => () => void (l.apply(x, { training: true }) as Tensor).dataSync();
  try {
    const inShape = (model.inputs[0].shape as number[]).slice(1);
    // Twice through the model: the first pass warms up every kernel, the second is kept (best of 3).
    for (let pass = 0; pass < 2; pass++) {
      let x = tf.randomUniform([rows, ...inShape], 0, 1, 'float32', 7);
      layers.forEach((l, i) => {
        const best = (f: () => void) => (pass === 0 ? time(f) : Math.min(time(f), time(f), time(f)));
        out[i + 1] = best(backward(l, x));
        out[L + i + 1] = best(forward(l, x));
        const next = tf.tidy(() => l.apply(x, { training: false }) as Tensor);
        x.dispose();
        x = next;
      });
      x.dispose();
    }
    out[0] = 1;
    evenOut(layers, out);
  } catch {
    out.fill(0);
    layers.forEach((l, i) => (out[i + 1] = l.countParams()));
  }
  return out;
}
