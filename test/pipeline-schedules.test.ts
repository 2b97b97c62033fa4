import { describe, expect, it } from 'vitest';
import { disagreement, type Proposal } from '../src/pipeline/agreement.js';
import { transferTag } from '../src/pipeline/comm.js';
import { proposeCut } from '../src/pipeline/cut.js';
import { balance, batches, cutProblem, microBatchSizes, stageRanges } from '../src/pipeline/partition.js';
import { computeOrder, simulate, simulateOrders, stageActions, theoreticalBubble, type Compute, type ScheduleKind } from '../src/pipeline/schedules.js';

/** The pure parts of src/pipeline: schedules, the cut, micro-batch sizes, tags and the agreement's errors. */

const text = (kind: ScheduleKind, s: number, S: number, M: number) => computeOrder(kind, s, S, M).map((c) => `${c.op}${c.mb}`).join(' ');

describe('schedules', () => {
  it('GPipe: all forwards, then all backwards; the last stage runs each backward after its forward', () => {
    expect(text('gpipe', 0, 3, 4)).toBe('F0 F1 F2 F3 B0 B1 B2 B3');
    expect(text('gpipe', 1, 3, 4)).toBe('F0 F1 F2 F3 B0 B1 B2 B3');
    expect(text('gpipe', 2, 3, 4)).toBe('F0 B0 F1 B1 F2 B2 F3 B3');
  });

  it('1F1B: S - s warm-up forwards, then one forward one backward, then the cool-down', () => {
    expect(text('1f1b', 0, 3, 6)).toBe('F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5');
    expect(text('1f1b', 1, 3, 6)).toBe('F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5');
    expect(text('1f1b', 2, 3, 6)).toBe('F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5');
    expect(text('1f1b', 0, 2, 4)).toBe('F0 F1 F2 B0 F3 B1 B2 B3');
    // Fewer micro-batches than the warm-up: all forwards, then all backwards.
    expect(text('1f1b', 0, 4, 2)).toBe('F0 F1 B0 B1');
  });

  it('every stage runs every forward and backward exactly once, forward before backward', () => {
    for (const kind of ['gpipe', '1f1b'] as const) {
      for (const S of [1, 2, 3, 5]) {
        for (const M of [1, 2, 3, 8, 13]) {
          for (let s = 0; s < S; s++) {
            const order = computeOrder(kind, s, S, M);
            expect(order.length).toBe(2 * M);
            for (let i = 0; i < M; i++) {
              const f = order.findIndex((c) => c.op === 'F' && c.mb === i);
              const b = order.findIndex((c) => c.op === 'B' && c.mb === i);
              expect(f).toBeGreaterThanOrEqual(0);
              expect(b).toBeGreaterThan(f);
            }
          }
        }
      }
    }
  });

  it('actions: receives before and sends after each compute, to the neighbouring stages; sends and receives pair up', () => {
    expect(stageActions('1f1b', 1, 3, 2).map((a) => (a.op === 'send' || a.op === 'recv' ? `${a.op}:${a.dir}${a.mb}@${a.peer}` : `${a.op}${a.mb}`))).toEqual([
      'recv:act0@0', 'F0', 'send:act0@2', 'recv:act1@0', 'F1', 'send:act1@2',
      'recv:grad0@2', 'B0', 'send:grad0@0', 'recv:grad1@2', 'B1', 'send:grad1@0',
    ]);
    for (const kind of ['gpipe', '1f1b'] as const) {
      const S = 4;
      const M = 6;
      const all = Array.from({ length: S }, (_, s) => stageActions(kind, s, S, M));
      for (let s = 0; s < S; s++) {
        for (const a of all[s]) {
          if (a.op !== 'send') continue;
          // The peer posts exactly one matching receive from this stage.
          expect(all[a.peer].filter((b) => b.op === 'recv' && b.dir === a.dir && b.mb === a.mb && b.peer === s)).toHaveLength(1);
        }
      }
    }
  });

  it('simulated with unit costs: no deadlock, the bubble is (S-1)/(M+S-1), and 1F1B holds at most S - s + 1 micro-batches', () => {
    for (const kind of ['gpipe', '1f1b'] as const) {
      for (const S of [1, 2, 3, 4]) {
        for (const M of [1, 2, 4, 8, 16]) {
          const sim = simulate(kind, S, M, 1, 2);
          expect(sim.makespan).toBe((M + S - 1) * 3);
          expect(sim.idle[0]).toBeCloseTo(theoreticalBubble(S, M), 12);
          for (let s = 0; s < S - 1; s++) expect(sim.peakInFlight[s]).toBe(kind === 'gpipe' ? M : Math.min(S - s + 1, M));
          expect(sim.peakInFlight[S - 1]).toBe(1);
        }
      }
    }
  });

  it('1F1B\'s warm-up of S - s forwards hides the hand-off latency that PipeDream-Flush\'s S - s - 1 pays once per micro-batch', () => {
    // PipeDream-Flush's order, built here: S - s - 1 warm-up forwards.
    const flush = (s: number, S: number, M: number): Compute[] => {
      if (s === S - 1) return computeOrder('1f1b', s, S, M);
      const out: Compute[] = [];
      let f = 0;
      let b = 0;
      while (f < Math.min(S - s - 1, M)) out.push({ op: 'F', mb: f++ });
      while (f < M) out.push({ op: 'F', mb: f++ }, { op: 'B', mb: b++ });
      while (b < M) out.push({ op: 'B', mb: b++ });
      return out;
    };
    const lambda = 0.1; // a hand-off costs a tenth of a forward
    for (const M of [4, 8, 16]) {
      const ideal = (M + 1) * 3;
      const ours = simulate('1f1b', 2, M, 1, 2, lambda);
      const paper = simulateOrders([flush(0, 2, M), flush(1, 2, M)], M, 1, 2, lambda);
      expect(paper.makespan).toBeCloseTo(ideal + M * lambda, 9); // a hand-off on the critical path each micro-batch
      expect(ours.makespan).toBeCloseTo(ideal + 2 * lambda, 9); // the first forward's and the last backward's
      expect(simulateOrders([flush(0, 2, M), flush(1, 2, M)], M).makespan).toBe(ideal); // free hand-offs: the same
    }
  });

  it('simulate finds a deadlock', () => {
    // Stage 0 waits for B0's gradient before running the F0 that would produce it.
    const orders = [[{ op: 'B', mb: 0 }, { op: 'F', mb: 0 }], [{ op: 'F', mb: 0 }, { op: 'B', mb: 0 }]] as const;
    expect(() => simulateOrders(orders.map((o) => [...o]), 1)).toThrow(/deadlocks: stages wait at B0, F0/);
  });

  it('rejects impossible shapes', () => {
    expect(() => computeOrder('gpipe', 2, 2, 4)).toThrow(/stage must be in 0..1/);
    expect(() => computeOrder('gpipe', 0, 2, 0)).toThrow(/micro-batches/);
  });
});

describe('cut and micro-batches', () => {
  it('stageRanges and cutProblem', () => {
    expect(stageRanges([3, 7], 9)).toEqual([[0, 3], [3, 7], [7, 9]]);
    expect(stageRanges([], 4)).toEqual([[0, 4]]);
    expect(cutProblem([2], 4, 2)).toBeUndefined();
    expect(cutProblem([1, 2, 3], 3, 4)).toMatch(/4 stages but the model has only 3 layer/);
    expect(cutProblem([2], 4, 3)).toMatch(/1 cut point\(s\) make 2 stages, but the pipeline has 3 ranks/);
    expect(cutProblem([2, 2], 4, 3)).toMatch(/ascending integers in 1..3/);
    expect(cutProblem([0], 4, 2)).toMatch(/ascending/);
    expect(cutProblem([4], 4, 2)).toMatch(/ascending/);
  });

  it('balance minimises the slowest stage', () => {
    expect(balance([1, 1, 1, 1], 2)).toEqual([2]);
    expect(balance([4, 1, 1, 1, 1], 2)).toEqual([1]);
    expect(balance([1, 2, 3, 4, 5, 6, 7, 8, 9], 3)).toEqual([5, 7]); // 15 | 13 | 17
    expect(balance([5], 1)).toEqual([]);
    expect(balance([0, 0, 0], 3)).toEqual([1, 2]);
    expect(() => balance([1, 2], 3)).toThrow(RangeError);
    // The last stage's own costs (there, no second forward pass).
    expect(balance([4, 4, 4, 4], 2)).toEqual([2]); // 8 | 8
    expect(balance([4, 4, 4, 4], 2, [2, 2, 2, 2])).toEqual([1]); // 4 | 6, not 8 | 4
    // Against brute force on random costs.
    let seed = 3;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (let trial = 0; trial < 50; trial++) {
      const n = 2 + Math.floor(rand() * 7);
      const k = 1 + Math.floor(rand() * Math.min(n, 4));
      const costs = Array.from({ length: n }, () => Math.floor(rand() * 10));
      const worst = (cuts: number[]) => Math.max(...stageRanges(cuts, n).map(([a, b]) => costs.slice(a, b).reduce((p, q) => p + q, 0)));
      let best = Infinity;
      const search = (cuts: number[], from: number) => {
        if (cuts.length === k - 1) return void (best = Math.min(best, worst(cuts)));
        for (let c = from; c < n; c++) search([...cuts, c], c + 1);
      };
      search([], 1);
      expect(worst(balance(costs, k))).toBe(best);
    }
  });

  it('proposeCut: moves the cut by what the stages measured, keeps what each stage does besides its layers', () => {
    const costs = { fb: new Array(10).fill(2), f: new Array(10).fill(1) }; // 3 per layer before the last stage, 2 on it
    // At [5] the model says 15 | 10; measured 15 | 10: one layer to the last stage (12 | 12).
    expect(proposeCut([5], [15, 10], costs)).toEqual([4]);
    // Measured 15 | 14: the last stage has 4 ms besides its layers; [5] is already best (12 | 16 and 18 | 12 are worse).
    expect(proposeCut([5], [15, 14], costs)).toBeUndefined();
    // A uniformly slower pipeline (factor 2) moves the same way.
    expect(proposeCut([5], [30, 20], costs)).toEqual([4]);
    // Within 1%: no move.
    expect(proposeCut([5], [12.1, 12], { fb: [...new Array(5).fill(1.6), ...new Array(5).fill(2.4)], f: new Array(10).fill(0.8) })).toBeUndefined();
    // Three stages, each cut point moved on its own; two layers at most.
    // (factor 38/26; [3, 7] gives 9 | 13.4 | 17.1, [3, 8] 9 | 17.8 | 14.2)
    expect(proposeCut([3, 6], [9, 9, 20], { fb: new Array(10).fill(2), f: new Array(10).fill(1) })).toEqual([3, 7]);
    // Nothing to go on.
    expect(proposeCut([5], [Number.NaN, 1], costs)).toBeUndefined();
    expect(proposeCut([5], [1], costs)).toBeUndefined();
  });

  it('micro-batch sizes: equal parts, an uneven last batch as even as possible', () => {
    expect(microBatchSizes(12, 3)).toEqual([4, 4, 4]);
    expect(microBatchSizes(10, 4)).toEqual([3, 3, 2, 2]);
    expect(microBatchSizes(2, 4)).toEqual([1, 1]);
    expect(batches(10, 4)).toEqual([[0, 4], [4, 4], [8, 2]]);
    expect(batches(0, 4)).toEqual([]);
  });

  it('tags are distinct per round, micro-batch and direction', () => {
    const seen = new Set<number>();
    for (let r = 0; r < 3; r++) for (let mb = 0; mb < 20; mb++) for (const d of ['act', 'grad'] as const) seen.add(transferTag(r, mb, d));
    expect(seen.size).toBe(3 * 20 * 2);
    expect(Math.max(...seen)).toBeLessThan(2 ** 31);
  });
});

describe('agreement', () => {
  const layer = (cls: string, out: number[], w: number[][] = []) => ({ name: cls.toLowerCase(), cls, out, weights: w });
  const p = (over: Partial<Proposal> = {}): Proposal => ({ model: [layer('Dense', [-1, 8], [[6, 8], [8]])], options: { microBatches: 4 }, call: {}, ...over });

  it('agreeing proposals pass', () => {
    expect(disagreement([p(), p(), p()], 0, 'pipeline')).toBeUndefined();
  });

  it('a problem one rank found is raised on every rank, naming it', () => {
    const e = disagreement([p(), p({ error: 'fit: batchSize 10 is not a multiple of microBatches 4' })], 0, 'pipeline.fit') as Error & { code: string; details: { ranks: number[] } };
    expect(e.code).toBe('RING_ERR_INVALID_ARG');
    expect(e.message).toBe('rank 0: pipeline.fit: rank 1: fit: batchSize 10 is not a multiple of microBatches 4');
    expect(e.details.ranks).toEqual([1]);
    const same = disagreement([p({ error: 'x' }), p({ error: 'x' })], 1, 'pipeline') as Error;
    expect(same.message).toBe('rank 1: pipeline: x');
  });

  it('models that differ: the layer count, or the first layer that differs, with the ranks', () => {
    const extra = p({ model: [layer('Dense', [-1, 8]), layer('Dense', [-1, 3])] });
    const e = disagreement([p(), extra, p()], 2, 'pipeline') as Error & { code: string; details: { field: string; ranks: number[] } };
    expect(e.code).toBe('RING_ERR_MISMATCH');
    expect(e.message).toMatch(/^rank 2: pipeline: ranks disagree on the model: its number of layers \(ranks 0,2: 1 layers \(Dense\); rank 1: 2 layers \(Dense, Dense\)\)/);
    expect(e.details).toMatchObject({ field: 'model', ranks: [1] });
    const shape = disagreement([p(), p({ model: [layer('Dense', [-1, 9], [[6, 9], [9]])] })], 0, 'pipeline') as Error;
    expect(shape.message).toMatch(/layer 0 \(rank 0: 'dense' Dense -> \[-1,8\] \(weights \[6,8\] \[8\]\); rank 1: 'dense' Dense -> \[-1,9\]/);
  });

  it('options and call arguments that differ name the option', () => {
    const e = disagreement([p(), p({ options: { microBatches: 8 } })], 0, 'pipeline') as Error & { details: { field: string } };
    expect(e.message).toMatch(/ranks disagree on the option microBatches \(rank 0: 4; rank 1: 8\)/);
    expect(e.details.field).toBe('microBatches');
    const c = disagreement([p({ call: { batchSize: 12 } }), p({ call: { batchSize: 6 } })], 1, 'pipeline.fit', (r) => r + 10) as Error;
    expect(c.message).toMatch(/^rank 11: pipeline.fit: ranks disagree on the call argument batchSize \(rank 10: 12; rank 11: 6\)/);
  });
});
