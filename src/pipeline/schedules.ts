/**
 * Pipeline schedules as pure functions: the ordered list of what one stage does in one training
 * step. Terms: S stages (stage s owns a contiguous run of layers), M micro-batches per step (the
 * batch cut into M equal parts), F(i) = the stage's forward pass of micro-batch i, B(i) = its
 * backward pass. Stage s > 0 receives F(i)'s input (the activation) from stage s - 1, and stage
 * s < S - 1 sends its output on; stage s < S - 1 receives B(i)'s upstream gradient (dy) from stage
 * s + 1, and stage s > 0 sends the gradient of its input back. The last stage computes the loss.
 *
 * - GPipe (Huang et al. 2019): every stage runs F(0..M-1), then B(0..M-1) (a "flush" per step). A
 *   stage holds the inputs of all M micro-batches until their backward passes.
 * - 1F1B (PipeDream-Flush, Narayanan et al. 2021): stage s runs min(S - s, M) forward passes
 *   (warm-up), then alternates one forward and one backward (steady state), then runs the
 *   backward passes left (cool-down). A stage holds at most S - s + 1 micro-batches' inputs, not M.
 *   The paper's warm-up is one forward shorter (S - s - 1, holding S - s): with free communication
 *   it takes as long, but the hand-offs between stages then lie on the critical path (the next
 *   stage needs F(i) the moment it finishes B(i - 1), and this stage needs B(i)'s gradient soon
 *   after it finishes F(i + 1)): with 2 stages a hand-off's latency lambda costs both stages
 *   M·lambda of idle per step. One more forward in flight leaves the next stage an input waiting,
 *   and the latency is paid twice per step (simulate() with a latency shows both; the measured
 *   effect: docs/PIPELINE.md).
 *
 * The last stage runs B(i) right after F(i) in both: nothing downstream waits for its forward, and
 * the loss and its gradient then come from one pass. Both schedules take (M + S - 1)·(tF + tB) per
 * step when every stage costs the same, so a stage idles (S - 1)/(M + S - 1) of the step: the
 * bubble. Every send and receive is implied by a compute action; `stageActions` lists them in the
 * order a stage posts them (receives are posted early by the runner, sends never block compute).
 */

export type ScheduleKind = 'gpipe' | '1f1b';
export const SCHEDULES: readonly ScheduleKind[] = ['gpipe', '1f1b'];

/** A compute action of one stage. */
export interface Compute {
  op: 'F' | 'B';
  mb: number;
}

/** An action with its communication: recv before a compute, send after it. */
export type Action =
  | { op: 'recv'; dir: 'act' | 'grad'; mb: number; peer: number }
  | { op: 'F' | 'B'; mb: number }
  | { op: 'send'; dir: 'act' | 'grad'; mb: number; peer: number };

/** The compute order of stage `stage` of `stages` for `micro` micro-batches. */
export function computeOrder(kind: ScheduleKind, stage: number, stages: number, micro: number): Compute[] {
  checkShape(stage, stages, micro);
  const out: Compute[] = [];
  const last = stage === stages - 1;
  if (last) {
    for (let i = 0; i < micro; i++) out.push({ op: 'F', mb: i }, { op: 'B', mb: i });
    return out;
  }
  if (kind === 'gpipe') {
    for (let i = 0; i < micro; i++) out.push({ op: 'F', mb: i });
    for (let i = 0; i < micro; i++) out.push({ op: 'B', mb: i });
    return out;
  }
  const warmup = Math.min(stages - stage, micro);
  let f = 0;
  let b = 0;
  while (f < warmup) out.push({ op: 'F', mb: f++ });
  while (f < micro) {
    out.push({ op: 'F', mb: f++ });
    out.push({ op: 'B', mb: b++ });
  }
  while (b < micro) out.push({ op: 'B', mb: b++ });
  return out;
}

/** computeOrder with the receives and sends each compute implies, in order. */
export function stageActions(kind: ScheduleKind, stage: number, stages: number, micro: number): Action[] {
  const out: Action[] = [];
  for (const c of computeOrder(kind, stage, stages, micro)) {
    if (c.op === 'F') {
      if (stage > 0) out.push({ op: 'recv', dir: 'act', mb: c.mb, peer: stage - 1 });
      out.push(c);
      if (stage < stages - 1) out.push({ op: 'send', dir: 'act', mb: c.mb, peer: stage + 1 });
    } else {
      if (stage < stages - 1) out.push({ op: 'recv', dir: 'grad', mb: c.mb, peer: stage + 1 });
      out.push(c);
      if (stage > 0) out.push({ op: 'send', dir: 'grad', mb: c.mb, peer: stage - 1 });
    }
  }
  return out;
}

/** The bubble of a balanced pipeline: the fraction of a step each stage idles. */
export const theoreticalBubble = (stages: number, micro: number): number => (stages - 1) / (micro + stages - 1);

export interface Simulation {
  /** Time the step takes. */
  makespan: number;
  /** Per stage: time not spent computing, over the makespan. */
  idle: number[];
  /** Per stage: the most micro-batches whose input it held at once (forward done, backward not). */
  peakInFlight: number[];
}

/**
 * Runs the schedules of all stages against each other with fixed costs (forward tF, backward tB,
 * and `latency` per hand-off between stages, 0 by default): each compute starts when its stage is
 * free and its input has arrived.
 * Throws if the schedules deadlock (a stage waits for something that never comes). For tests and
 * for the bench's "theory" column.
 */
export function simulate(kind: ScheduleKind, stages: number, micro: number, tF = 1, tB = 2, latency = 0): Simulation {
  return simulateOrders(
    Array.from({ length: stages }, (_, s) => computeOrder(kind, s, stages, micro)),
    micro,
    tF,
    tB,
    latency,
  );
}

/** simulate() for any compute orders, one per stage. */
export function simulateOrders(orders: Compute[][], micro: number, tF = 1, tB = 2, latency = 0): Simulation {
  const stages = orders.length;
  const fDone = Array.from({ length: stages }, () => new Array<number>(micro).fill(-1));
  const bDone = Array.from({ length: stages }, () => new Array<number>(micro).fill(-1));
  const next = new Array<number>(stages).fill(0);
  const free = new Array<number>(stages).fill(0);
  const busy = new Array<number>(stages).fill(0);
  const held = new Array<number>(stages).fill(0);
  const peak = new Array<number>(stages).fill(0);
  let left = orders.reduce((a, o) => a + o.length, 0);
  while (left > 0) {
    let progressed = false;
    for (let s = 0; s < stages; s++) {
      const c = orders[s][next[s]];
      if (!c) continue;
      let ready: number;
      if (c.op === 'F') ready = s === 0 ? 0 : fDone[s - 1][c.mb] < 0 ? -1 : fDone[s - 1][c.mb] + latency;
      else ready = s === stages - 1 ? fDone[s][c.mb] : bDone[s + 1][c.mb] < 0 ? -1 : bDone[s + 1][c.mb] + latency;
      if (ready < 0) continue;
      const start = Math.max(free[s], ready);
      const end = start + (c.op === 'F' ? tF : tB);
      (c.op === 'F' ? fDone : bDone)[s][c.mb] = end;
      free[s] = end;
      busy[s] += end - start;
      held[s] += c.op === 'F' ? 1 : -1;
      peak[s] = Math.max(peak[s], held[s]);
      next[s]++;
      left--;
      progressed = true;
    }
    if (!progressed) throw new Error(`the schedule deadlocks: stages wait at ${next.map((k, s) => `${orders[s][k]?.op ?? '-'}${orders[s][k]?.mb ?? ''}`).join(', ')}`);
  }
  const makespan = Math.max(...free);
  return { makespan, idle: busy.map((b) => (makespan - b) / makespan), peakInFlight: peak };
}

function checkShape(stage: number, stages: number, micro: number): void {
  if (!Number.isInteger(stages) || stages < 1) throw new RangeError(`stages must be an integer >= 1, got ${stages}`);
  if (!Number.isInteger(stage) || stage < 0 || stage >= stages) throw new RangeError(`stage must be in 0..${stages - 1}, got ${stage}`);
  if (!Number.isInteger(micro) || micro < 1) throw new RangeError(`micro-batches must be an integer >= 1, got ${micro}`);
}
