import * as world from '../api.js';
import type { AllreduceOptions, ProcessGroup } from '../group.js';
import type { NumericArray } from '../dtypes.js';

/**
 * What a pipeline needs from its process set: the world (the free functions) or a ProcessGroup
 * behind one shape, with ranks in the set's own numbering. `worldRank(r)` names a member in
 * messages (errors say "rank 3", as ringrun does).
 */
export interface StageComm {
  readonly rank: number;
  readonly size: number;
  worldRank(r: number): number;
  send(x: NumericArray, dst: number, tag: number): Promise<void>;
  recv<T extends NumericArray>(into: T, src: number, tag: number): Promise<T>;
  allgather<T extends NumericArray>(x: T, name: string): Promise<T>;
  broadcast<T extends NumericArray>(x: T, root: number, name: string): Promise<T>;
  allreduce<T extends NumericArray>(x: T, o: AllreduceOptions): Promise<T>;
}

export function worldComm(): StageComm {
  return {
    rank: world.rank(),
    size: world.size(),
    worldRank: (r) => r,
    send: (x, dst, tag) => world.send(x, { dst, tag }),
    recv: (into, src, tag) => world.recv(into, { src, tag }),
    allgather: (x, name) => world.allgather(x, { name }),
    broadcast: (x, root, name) => world.broadcast(x, { root, name }),
    allreduce: (x, o) => world.allreduce(x, o),
  };
}

export function groupComm(g: ProcessGroup): StageComm {
  const ranks = g.ranks();
  return {
    rank: g.rank(),
    size: g.size(),
    worldRank: (r) => ranks[r] ?? r,
    send: (x, dst, tag) => g.send(x, { dst, tag }),
    recv: (into, src, tag) => g.recv(into, { src, tag }),
    allgather: (x, name) => g.allgather(x, { name }),
    broadcast: (x, root, name) => g.broadcast(x, { root, name }),
    allreduce: (x, o) => g.allreduce(x, o),
  };
}

/**
 * The tag of one transfer: distinct per (round, micro-batch, direction), so that the sends and
 * receives of GPipe and 1F1B can never take each other's data, whatever order they are posted in.
 * A round is one training step or one predict call; rounds wrap after 2^14 (matching is in call
 * order per tag anyway). Above 2^30, out of the way of an application's own small tags.
 */
export const MAX_MICRO_BATCHES = 1 << 14;
export function transferTag(round: number, mb: number, dir: 'act' | 'grad'): number {
  return 2 ** 30 + (round % (1 << 14)) * 2 * MAX_MICRO_BATCHES + mb * 2 + (dir === 'act' ? 0 : 1);
}
