import { Engine } from './engine/client.js';
import { RingNotInitializedError } from './errors.js';
import type {
  AllgatherOptions,
  AllreduceOptions,
  AlltoallOptions,
  AlltoallResult,
  BarrierOptions,
  BroadcastOptions,
  RecvOptions,
  ReducescatterOptions,
  SendOptions,
} from './group.js';
import { RingGroup } from './group.js';
import type { ProcessGroup } from './group.js';
import type { NumericArray } from './dtypes.js';
import { resolveOptions, type InitOptions, type ResolvedOptions } from './options.js';
import { formRing } from './rendezvous/ring.js';
import { hideToken, isFileStore } from './env.js';
import { releaseSharedToken, sharedToken } from './rendezvous/file-store.js';
import { quietTfjsBanner } from './tfjs/tf.js';

/**
 * The process-wide ring, Horovod style: `await init()` once, then the free functions below.
 * `initialized()` says whether it is up; `shutdown()` ends it (and init() may be called again).
 *
 * Collectives called from this thread run on this thread's ring. The tfjs optimizer's gradients
 * go through the comm worker (src/engine), which forms a second ring of its own during init().
 */
let current: { group: RingGroup; options: ResolvedOptions; engine?: Engine } | undefined;
let starting: Promise<typeof current> | undefined;

function state(fn: string) {
  if (!current) throw new RingNotInitializedError(fn);
  return current;
}
const group = (fn: string): RingGroup => state(fn).group;

export async function init(options: InitOptions = {}): Promise<void> {
  if (current) return;
  if (!starting) {
    let resolved: ResolvedOptions;
    starting = (async () => {
      // From here on the job token is only in memory, not in what children inherit (see hideToken).
      hideToken();
      resolved = await withFileStoreToken(resolveOptions(options));
      return formRing(resolved);
    })()
      .then(async (g) => {
        // Every rank has the file store's token now (the ring is up): it need not stay on disk.
        if (isFileStore(resolved.store) && resolved.rank === 0) await releaseSharedToken(resolved.store.dir);
        const s: NonNullable<typeof current> = { group: g, options: resolved };
        if (g.rank !== 0) quietTfjsBanner();
        // The comm worker starts now, while this thread is free: a worker that is still booting
        // when the main thread blocks in Atomics.wait (tfjs' synchronous applyGradients) can
        // hang, seen here. Its ring is formed now too, so start-up errors surface from init().
        const e = engine('init', s);
        if (e) {
          try {
            await e.whenReady();
          } catch (err) {
            await e.shutdown().catch(() => {});
            await g.shutdown().catch(() => {});
            throw err;
          }
        }
        return s;
      })
      .finally(() => (starting = undefined));
  }
  current = await starting;
}

/**
 * With a file:// store and no configured token, the ranks share a random one through the
 * directory (see sharedToken), so that links are still authenticated.
 */
async function withFileStoreToken(o: ResolvedOptions): Promise<ResolvedOptions> {
  if (!o.tokenIsDefault || o.size === 1 || !isFileStore(o.store)) return o;
  return { ...o, token: await sharedToken(o.store.dir), tokenIsDefault: false };
}

export const initialized = (): boolean => current !== undefined;
export const rank = (): number => group('rank').rank;
export const size = (): number => group('size').size;
export const localRank = (): number => group('localRank').localRank;
export const localSize = (): number => group('localSize').localSize;

// The collectives are async: a call before init() rejects (rather than throwing synchronously).

/**
 * A call's error reaches the caller with the caller's own frames. An error raised while the ring
 * handles a message has only the event loop's frames (ringreduce's), so a user saw 20 lines of
 * library stack and not the line of their own that called the collective. V8 keeps the awaiting
 * callers' frames ("at async train (train.js:42:9)"): they go first, ringreduce's after.
 */
async function traced<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    throw withCaller(e);
  }
}

const OWN = new URL('.', import.meta.url).href;

function withCaller(e: unknown): unknown {
  if (!(e instanceof Error) || typeof e.stack !== 'string') return e;
  // Node's own frames (the microtask queue that ran this catch) are nobody's code.
  const callers = (new Error().stack ?? '')
    .split('\n')
    .slice(1)
    .filter((l) => !l.includes(OWN) && !/\(node:|at node:/.test(l));
  if (callers.length === 0) return e;
  const [head, ...frames] = e.stack.split('\n    at ');
  e.stack = `${head}\n${callers.join('\n')}\n    --- in ringreduce:${frames.map((f) => `\n    at ${f}`).join('')}`;
  return e;
}

export const allreduce = <T extends NumericArray>(x: T, o?: AllreduceOptions): Promise<T> => traced(() => group('allreduce').allreduce(x, o));
export const allgather = <T extends NumericArray>(x: T, o?: AllgatherOptions): Promise<T> => traced(() => group('allgather').allgather(x, o));
export const broadcast = <T extends NumericArray>(x: T, o?: BroadcastOptions): Promise<T> => traced(() => group('broadcast').broadcast(x, o));
export const reducescatter = <T extends NumericArray>(x: T, o?: ReducescatterOptions): Promise<T> =>
  traced(() => group('reducescatter').reducescatter(x, o));
export const barrier = (o?: BarrierOptions): Promise<void> => traced(() => group('barrier').barrier(o));
export const alltoall = <T extends NumericArray>(x: T, o?: AlltoallOptions): Promise<AlltoallResult<T>> => traced(() => group('alltoall').alltoall(x, o));
export const send = (x: NumericArray, o: SendOptions): Promise<void> => traced(() => group('send').send(x, o));
export const recv = <T extends NumericArray>(into: T, o: RecvOptions): Promise<T> => traced(() => group('recv').recv(into, o));
/** A process group of the listed ranks: see RingGroup.newGroup (every rank calls it; non-members get null). */
export const newGroup = (ranks: readonly number[]): Promise<ProcessGroup | null> => traced(() => group('newGroup').newGroup(ranks));

/**
 * The comm worker for gradient reduction, started by init() (undefined when size() === 1 and the
 * job has no parameter servers: their client runs on it too).
 */
export function engine(fn: string, s = state(fn)): Engine | undefined {
  if (s.group.size === 1 && s.options.psServers === 0) return undefined;
  if (!s.engine) {
    const o = s.options;
    const { source: _source, hostStore: _hostStore, tokenIsDefault: _default, logger: _logger, store, ...rest } = o;
    s.engine = new Engine({ ...rest, store: store! });
  }
  return s.engine;
}

/** The job's number of parameter servers (RINGREDUCE_PS_SERVERS, ringrun --servers). */
export const parameterServers = (fn: string): number => state(fn).options.psServers;

export async function shutdown(): Promise<void> {
  const s = current;
  current = undefined;
  await s?.engine?.shutdown();
  await s?.group.shutdown();
}
