import { RingNotInitializedError } from './errors.js';
import type { AllgatherOptions, AllreduceOptions, BarrierOptions, BroadcastOptions, ReducescatterOptions } from './group.js';
import { RingGroup } from './group.js';
import type { NumericArray } from './dtypes.js';
import { resolveOptions, type InitOptions } from './options.js';
import { formRing } from './rendezvous/ring.js';

/**
 * The process-wide ring, Horovod style: `await init()` once, then the free functions below.
 * `initialized()` says whether it is up; `shutdown()` ends it (and init() may be called again).
 */
let current: RingGroup | undefined;
let starting: Promise<RingGroup> | undefined;

function group(fn: string): RingGroup {
  if (!current) throw new RingNotInitializedError(fn);
  return current;
}

export async function init(options: InitOptions = {}): Promise<void> {
  if (current) return;
  if (!starting) {
    const resolved = resolveOptions(options);
    starting = formRing(resolved).finally(() => (starting = undefined));
  }
  current = await starting;
}

export const initialized = (): boolean => current !== undefined;
export const rank = (): number => group('rank').rank;
export const size = (): number => group('size').size;
export const localRank = (): number => group('localRank').localRank;
export const localSize = (): number => group('localSize').localSize;

// The collectives are async: a call before init() rejects (rather than throwing synchronously).
export const allreduce = async <T extends NumericArray>(x: T, o?: AllreduceOptions): Promise<T> => group('allreduce').allreduce(x, o);
export const allgather = async <T extends NumericArray>(x: T, o?: AllgatherOptions): Promise<T> => group('allgather').allgather(x, o);
export const broadcast = async <T extends NumericArray>(x: T, o?: BroadcastOptions): Promise<T> => group('broadcast').broadcast(x, o);
export const reducescatter = async <T extends NumericArray>(x: T, o?: ReducescatterOptions): Promise<T> =>
  group('reducescatter').reducescatter(x, o);
export const barrier = async (o?: BarrierOptions): Promise<void> => group('barrier').barrier(o);

export async function shutdown(): Promise<void> {
  const g = current;
  current = undefined;
  await g?.shutdown();
}
