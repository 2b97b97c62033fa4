import type * as TfCore from '@tensorflow/tfjs-core';
import type { StageComm } from './comm.js';
import { proposeCut, type LayerCosts } from './cut.js';
import type { LossOrMetricFn } from './loss.js';
import { microBatchSizes } from './partition.js';
import type { ScheduleKind } from './schedules.js';
import type { StageRunner } from './stage.js';

type Tensor = TfCore.Tensor;

/** Cuts timed by calibrate, each on two runs of the first batch's schedule (after an untimed one). */
const CALIBRATION_RUNS = 3;

/** What calibrate reads of a built pipeline, and changes: the cut, the runner, the text printed. */
export interface Staged {
  comm: StageComm;
  replicas?: StageComm;
  runner: StageRunner;
  cuts: number[];
  last: boolean;
  costs?: LayerCosts;
  how: string;
}

/**
 * 'auto', before fit's first step: the cut from timing each layer alone misses what a stage does
 * besides its layers (the hand-offs: reading its output back, making tensors of what arrives;
 * the loss) and what running beside the other stages costs it, and one layer of a long stack is
 * a few % of a stage: at 8 micro-batches a cut one layer off can double a stage's idle. So the
 * stages run the first batch's schedule, not applying its gradients, and time their own work in
 * it (after one untimed run, best of two); proposeCut moves the cut by what that shows
 * (`restage` rebuilds this rank's stage there: every rank still holds every layer), and the
 * schedule is timed again at the new cut, up to CALIBRATION_RUNS cuts. The best cut measured wins
 * (every rank decides from the same gathered times; with replicas, the first pipeline's choice).
 * The caller skips it for layers whose training forward draws random numbers or updates
 * statistics (dropout, batch normalization): the runs would show.
 */
export async function calibrate(
  tf: typeof TfCore,
  b: Staged,
  restage: (cuts: number[]) => void,
  run: { schedule: ScheduleKind; microBatches: number; nextRound: () => number },
  batch: { xs: Tensor; ys: Tensor; batchSize: number; loss: LossOrMetricFn; metrics: LossOrMetricFn[] },
): Promise<void> {
  const n = Math.min(batch.batchSize, batch.xs.shape[0] ?? 0);
  const costs = b.costs;
  if (!costs || n < run.microBatches || b.comm.size < 2) return;
  const sizes = microBatchSizes(n, run.microBatches);
  const x = b.comm.rank === 0 ? tf.slice(batch.xs, 0, n) : undefined;
  const y = b.last ? tf.slice(batch.ys, 0, n) : undefined;
  const once = async (): Promise<number> => {
    const { stepMs, waitMs } = b.runner.timing;
    const { grads } = await b.runner.trainStep({ round: run.nextRound(), schedule: run.schedule, sizes, x, y, loss: batch.loss, metrics: batch.metrics });
    tf.dispose([...grads.values()]);
    return b.runner.timing.stepMs - stepMs - (b.runner.timing.waitMs - waitMs);
  };
  const measured: Array<{ cuts: number[]; busy: number[] }> = [];
  try {
    await once();
    for (let k = 0; k < CALIBRATION_RUNS; k++) {
      // Best of two: a run's time varies by a few % on a busy machine, a layer moves about as much.
      const mine = Math.min(await once(), await once());
      const busy = Array.from(await b.comm.allgather(Float64Array.of(mine), 'ringreduce:pipeline:calibrate'));
      measured.push({ cuts: b.cuts, busy });
      const next = proposeCut(b.cuts, busy, costs);
      if (!next || measured.some((m) => m.cuts.join() === next.join())) break;
      restage(next);
    }
  } finally {
    tf.dispose([...(x ? [x] : []), ...(y ? [y] : [])]);
  }
  const slowest = (m: { busy: number[] }) => Math.max(...m.busy);
  let best = measured.reduce((p, q) => (slowest(q) < slowest(p) ? q : p));
  if (b.replicas) {
    const cuts = Array.from(await b.replicas.broadcast(Int32Array.from(best.cuts), 0, 'ringreduce:pipeline:cuts'));
    best = measured.find((m) => m.cuts.join() === cuts.join()) ?? { cuts, busy: [] };
  }
  const from = measured[0].cuts;
  if (best.cuts.join() !== b.cuts.join()) restage(best.cuts);
  Object.assign(b.runner.timing, { steps: 0, stepMs: 0, waitMs: 0, syncMs: 0 });
  const shown = measured.map((m) => `[${m.cuts.join(', ')}] ${m.busy.map((t) => t.toFixed(1)).join(' | ')}`).join(', ');
  b.how += best.cuts.join() === from.join() ? `; kept after timing the stages in training (ms per stage: ${shown})` : `; moved from [${from.join(', ')}] after timing the stages in training (ms per stage: ${shown})`;
}
