/**
 * Results that ranks print as tagged JSON lines ("TAG {...}"): parsed and sorted by rank, and the
 * relative error used by the equivalence tests.
 */
export function taggedResults<R extends { rank: number }>(stdout: string, tag: string): R[] {
  const mark = `${tag} `;
  return stdout
    .split('\n')
    .filter((l) => l.includes(mark))
    .map((l) => JSON.parse(l.slice(l.indexOf(mark) + mark.length)) as R)
    .sort((a, b) => a.rank - b.rank);
}

/** What the training fixtures print per rank: final and initial weights by name, tensors per step. */
export interface TrainResult {
  rank: number;
  size: number;
  weights: Record<string, number[]>;
  initial: Record<string, number[]>;
  numTensors: number[];
}

/** max|a - b| / max|b|: the relative error of `a` against the reference `b`. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    norm = Math.max(norm, Math.abs(b[i]));
  }
  return diff / norm;
}
