import { mulberry32 } from '../prng.js';

/**
 * Where the model is cut, as pure functions. A cut list [c1, c2, ...] (ascending, 0 < c < L) puts
 * layers [0, c1) on stage 0, [c1, c2) on stage 1, ..., [c_last, L) on the last stage: the form
 * the `stages` option takes ([3, 7]: layers 0-2 | 3-6 | 7-).
 */

/** [first, end) layer index of each stage. */
export function stageRanges(cuts: readonly number[], layers: number): Array<[number, number]> {
  const bounds = [0, ...cuts, layers];
  return bounds.slice(0, -1).map((b, i) => [b, bounds[i + 1]]);
}

/** Why a cut list does not fit `layers` layers and `stages` stages, or undefined if it does. */
export function cutProblem(cuts: readonly number[], layers: number, stages: number): string | undefined {
  if (stages > layers) return `${stages} stages but the model has only ${layers} layer(s): a stage needs at least one layer`;
  if (cuts.length !== stages - 1) return `${cuts.length} cut point(s) make ${cuts.length + 1} stages, but the pipeline has ${stages} ranks (one stage per rank)`;
  let prev = 0;
  for (const c of cuts) {
    if (!Number.isInteger(c) || c <= prev || c >= layers) {
      return `cut points must be ascending integers in 1..${layers - 1} (each stage at least one layer), got [${cuts.join(', ')}]`;
    }
    prev = c;
  }
  return undefined;
}

/**
 * The contiguous split of `costs` into `parts` non-empty runs that minimises the largest run's
 * sum (ties: the earliest cuts), as cut points. `lastCosts` (default: `costs`) are what a layer
 * costs on the last stage, which does not run its forward pass twice (see stage.ts). Dynamic
 * programming over (parts, layers): fine for the few hundred layers a model has.
 */
export function balance(costs: readonly number[], parts: number, lastCosts: readonly number[] = costs): number[] {
  const n = costs.length;
  if (parts < 1 || parts > n) throw new RangeError(`cannot split ${n} layers into ${parts} stages`);
  const prefixOf = (cs: readonly number[]) => {
    const p = [0];
    for (const c of cs) p.push(p.at(-1)! + Math.max(0, c));
    return p;
  };
  const prefix = prefixOf(costs);
  const lastPrefix = prefixOf(lastCosts);
  let k = 0;
  const sum = (a: number, b: number) => (k === parts ? lastPrefix[b] - lastPrefix[a] : prefix[b] - prefix[a]);
  // best[k][j]: the smallest largest-run over layers [0, j) in k runs; from[k][j]: where run k starts.
  const best = Array.from({ length: parts + 1 }, () => new Array<number>(n + 1).fill(Infinity));
  const from = Array.from({ length: parts + 1 }, () => new Array<number>(n + 1).fill(0));
  best[0][0] = 0;
  for (k = 1; k <= parts; k++) {
    for (let j = k; j <= n - (parts - k); j++) {
      for (let i = k - 1; i < j; i++) {
        const v = Math.max(best[k - 1][i], sum(i, j));
        if (v < best[k][j] - 1e-12 * Math.abs(v)) {
          best[k][j] = v;
          from[k][j] = i;
        }
      }
    }
  }
  const cuts: number[] = [];
  let j = n;
  for (let k = parts; k > 1; k--) {
    j = from[k][j];
    cuts.unshift(j);
  }
  return cuts;
}

/**
 * The sizes of the micro-batches of a batch of n examples: M equal parts when M divides n (the
 * `microBatches` option must divide `batchSize`); a shorter last batch of an epoch is cut as
 * evenly as possible (the first n % M parts one example larger), into n parts if n < M.
 */
export function microBatchSizes(n: number, micro: number): number[] {
  const m = Math.min(micro, n);
  const base = Math.floor(n / m);
  return Array.from({ length: m }, (_, i) => base + (i < n % m ? 1 : 0));
}

/** The batches of an epoch of n examples: [start, size] each. */
export function batches(n: number, batchSize: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let s = 0; s < n; s += batchSize) out.push([s, Math.min(batchSize, n - s)]);
  return out;
}

/** A seeded Fisher-Yates shuffle (mulberry32), the same on every stage. */
export function permute(a: Int32Array, seed: number): void {
  const rand = mulberry32(seed);
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
}
