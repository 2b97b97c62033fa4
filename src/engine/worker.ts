import { parentPort, type MessagePort } from 'node:worker_threads';
import { RingError, RingInvalidArgError, serializeError, type SerializedRingError } from '../errors.js';
import type { RingGroup } from '../group.js';
import { stderrLogger } from '../logger.js';
import { formRing } from '../rendezvous/ring.js';
import type { EngineOptions, FromWorker, ToWorker } from './messages.js';
import { Negotiator, type Pending } from './negotiator.js';
import { PsClient, type StepInfo } from '../ps/client.js';

/**
 * The comm thread: owns the engine's ring (a second world ring, formed at init) and reduces the
 * gradient groups the main thread submits, one Negotiator per set of ranks: the world's, and one
 * for each process set a DistributedOptimizer reduces over, made on first use by its members only
 * (RingGroup.memberGroup) on this thread's own links, named after the main thread's group.
 */
const port = parentPort!;
let syncPort: MessagePort | undefined;
let ring: RingGroup | undefined;
let formed!: (r: RingGroup) => void;
let notFormed!: (e: unknown) => void;
/** The engine's ring once init has formed it (groups submitted before then wait for it). */
const world = new Promise<RingGroup>((resolve, reject) => ((formed = resolve), (notFormed = reject)));
world.catch(() => {});
let options: EngineOptions;
let fatal: SerializedRingError | undefined;
const scopes = new Map<string, Promise<Negotiator>>();
/** The parameter-server client, made by the first 'ps' step (one per process: see tfjs/optimizer.ts). */
let ps: Promise<PsClient> | undefined;
const made: Negotiator[] = [];

function reply(p: Pick<Pending, 'id' | 'control' | 'sync'>, error?: SerializedRingError, ps?: StepInfo): void {
  if (Atomics.load(p.control, 0) !== 0) return; // answered already
  // Post first, then wake: a main thread blocked in Atomics.wait reads the reply straight off the port.
  const msg: FromWorker = ps ? { type: 'done', id: p.id, error, ps } : { type: 'done', id: p.id, error };
  (p.sync ? syncPort! : port).postMessage(msg);
  Atomics.store(p.control, 0, error ? 2 : 1);
  Atomics.notify(p.control, 0);
}

function serialize(e: unknown): SerializedRingError {
  return e instanceof RingError ? serializeError(e) : { code: 'RING_ERR_INTERNAL', message: String((e as Error)?.stack ?? e), details: {} };
}

function negotiator(r: RingGroup, members: number[], onFatal: (e: SerializedRingError) => void): Negotiator {
  const n = new Negotiator(r, members, options, reply, onFatal);
  made.push(n);
  return n;
}

/** The world's negotiator, or a process set's (made on first use: every member submits to it). */
function scopeFor(scope: { id: string; members: number[] } | undefined): Promise<Negotiator> {
  const key = scope ? `g${scope.id}` : 'world';
  let s = scopes.get(key);
  if (!s) {
    // A process set's failure (its ring broke) answers its own groups; the world's ends the engine.
    s = scope
      ? world.then((w) => w.memberGroup(`engine.${scope.id}`, scope.members)).then((g) => negotiator(g, scope.members, () => {}))
      : world.then((w) =>
          negotiator(w, Array.from({ length: w.size }, (_, r) => r), (err) => {
            fatal = err;
            port.postMessage({ type: 'fatal', error: err } satisfies FromWorker);
          }),
        );
    scopes.set(key, s);
  }
  return s;
}

function checkStalls(): void {
  for (const n of made) n.checkStalls();
}

port.on('message', async (m: ToWorker | { type: 'syncPort'; port: MessagePort }) => {
  if (m.type === 'syncPort') {
    syncPort = m.port;
    return;
  }
  if (m.type === 'init') {
    options = m.options;
    try {
      ring = await formRing(
        {
          ...options,
          source: 'options',
          hostStore: false,
          tokenIsDefault: false,
          logger: stderrLogger,
        },
        'engine',
      );
      formed(ring);
      setInterval(checkStalls, Math.min(1000, Math.max(10, options.stallWarningMs / 4))).unref();
      port.postMessage({ type: 'ready' } satisfies FromWorker);
    } catch (e) {
      notFormed(e);
      fatal = serialize(e);
      port.postMessage({ type: 'fatal', error: fatal } satisfies FromWorker);
    }
  } else if (m.type === 'group') {
    const { scope, ...rest } = m;
    const p: Pending = { ...rest, control: new Int32Array(m.control), submittedAt: Date.now(), warned: false };
    if (fatal) return reply(p, fatal);
    scopeFor(scope).then(
      (n) => n.submit(p),
      (e) => reply(p, serialize(e)),
    );
  } else if (m.type === 'ps') {
    const p = { id: m.id, control: new Int32Array(m.control), sync: m.sync };
    if (m.setup && !ps) {
      const { initial, ...setup } = m.setup;
      ps = PsClient.connect({ ...options, logger: stderrLogger }, setup, new Float32Array(initial));
      ps.catch(() => {});
    }
    if (!ps) return reply(p, serialize(new Error('a parameter-server step before its setup')));
    ps.then((c): Promise<StepInfo | undefined> => (m.fetch ? c.fetch(new Float32Array(m.buffer)).then(() => undefined) : c.push(new Float32Array(m.buffer), m.lr))).then(
      (info) => reply(p, undefined, info),
      (e) => reply(p, serialize(e)),
    );
  } else if (m.type === 'ps-save') {
    const p = { id: m.id, control: new Int32Array(m.control), sync: m.sync };
    if (!ps) return reply(p, serialize(new RingInvalidArgError('saveServerState: no parameter-server step has run yet: the servers hold nothing to save')));
    ps.then((c) => c.save(m.dir)).then(
      () => reply(p),
      (e) => reply(p, serialize(e)),
    );
  } else if (m.type === 'shutdown') {
    await ps?.then((c) => c.close()).catch(() => {});
    await ring?.shutdown().catch(() => {});
    port.postMessage({ type: 'closed' } satisfies FromWorker);
  }
});
