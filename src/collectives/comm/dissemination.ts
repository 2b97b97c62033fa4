import { mod } from '../schedule.js';

/**
 * The schedule of the direct route for small operations (see direct-route.ts): a dissemination
 * (Bruck) all-gather of one block per rank — its descriptor, with its input when that rides
 * inline — as pure functions both peers call. Nothing here knows about links.
 *
 * Terms: N ranks, radix R, round k = 0..rounds-1 with step = R^k. After round k-1 rank r holds the
 * **run** of origins r, r+1, ..., r+step-1 (mod N), its own block first. In round k it sends to
 * rank r - j*step (j = 1..R-1) the first min(step, N - j*step) blocks of its run — exactly what
 * that rank lacks to extend its own run by j*step, and nothing it has — and it receives the same
 * from rank r + j*step; a j with j*step >= N sends nothing. So after round k the run is R times
 * longer, after ceil(log_R N) rounds it holds every origin once, and no block arrives twice.
 *
 * Each offset j*R^k (< N) has one nonzero base-R digit, so the offsets are distinct: the sender
 * alone says which round and which origins a block may carry (`expectedFrom`), which is how a
 * receiver checks what a peer sends it. With R >= N-1 there is one round: every rank sends its
 * block straight to every other (one hop); larger N cost log_R N hops instead of the ring's N-1.
 */

/** One round's sends of one rank to one peer: `count` blocks, origins `first`, first+1, ... (mod N). */
export interface BlockRun {
  peer: number;
  first: number;
  count: number;
}

/** Rounds for `size` ranks at `radix`: the least k with radix^k >= size (0 for one rank). */
export function disseminationRounds(size: number, radix: number): number {
  let rounds = 0;
  for (let reach = 1; reach < size; reach *= radix) rounds++;
  return rounds;
}

/** What rank `rank` sends in round `round` (see the file comment). */
export function roundSends(rank: number, size: number, radix: number, round: number): BlockRun[] {
  const step = radix ** round;
  const out: BlockRun[] = [];
  for (let j = 1; j < radix && j * step < size; j++) {
    out.push({ peer: mod(rank - j * step, size), first: rank, count: Math.min(step, size - j * step) });
  }
  return out;
}

/**
 * How many blocks of its run rank r needs before it can make round `round`'s sends: the longest
 * of them (j = 1), min(step, N - step).
 */
export function runNeeded(size: number, radix: number, round: number): number {
  const step = radix ** round;
  return Math.min(step, size - step);
}

/** What rank `rank` receives from `sender` (its round and origins), or undefined when nothing. */
export function expectedFrom(rank: number, sender: number, size: number, radix: number): (BlockRun & { round: number }) | undefined {
  const offset = mod(sender - rank, size);
  if (offset === 0) return undefined;
  for (let round = 0, step = 1; step < size; round++, step *= radix) {
    if (offset % step !== 0) break;
    const j = offset / step;
    if (j < radix) return { round, peer: sender, first: sender, count: Math.min(step, size - offset) };
  }
  return undefined;
}

/** Whether origin `origin` lies in `run` (mod `size`). */
export function inRun(run: BlockRun, origin: number, size: number): boolean {
  return mod(origin - run.first, size) < run.count;
}

/** Every rank this one exchanges blocks with, in either direction (its links of the route). */
export function disseminationPeers(rank: number, size: number, radix: number): number[] {
  const peers = new Set<number>();
  const rounds = disseminationRounds(size, radix);
  for (let k = 0; k < rounds; k++) {
    for (const s of roundSends(rank, size, radix, k)) {
      peers.add(s.peer);
      peers.add(mod(2 * rank - s.peer, size));
    }
  }
  peers.delete(rank);
  return [...peers].sort((a, b) => a - b);
}
