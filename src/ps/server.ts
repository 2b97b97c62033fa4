import { isAbsolute } from 'node:path';
import type * as TfCore from '@tensorflow/tfjs-core';
import { codecFor } from '../compression/registry.js';
import { RingError, RingInternalError, RingInvalidArgError, RingPeerLostError, RingProtocolError, serializeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { peerText } from '../peer-text.js';
import type { Link } from '../transport/link.js';
import type { DataHeader } from '../transport/wire.js';
import {
  decodeFrame,
  frameText,
  OP_INIT,
  OP_PUSH,
  OP_WEIGHTS,
  validateToServer,
  type HelloMsg,
  type InitMsg,
  type ToServer,
  type ToWorker,
} from './messages.js';
import { agreeOnJob, type Job } from './job.js';
import { ChunkWeights } from './weights.js';

/**
 * One parameter server: the chunks of the model it holds (weights.ts), and the rules by which
 * workers' pushes become updates and their pulls are answered.
 *
 * Clocks. A worker's *clock* is the number of steps it has pushed here (a step counts once its
 * 'pull' arrives: all its chunks are in). The server's clock is the smallest clock of the workers
 * still in the job (a worker that has not connected yet counts with the clock it will start at).
 * The *staleness* of a worker's step s is s minus the server's clock when the worker last read
 * the weights: how many steps of the slowest worker the weights it computed on were missing
 * (0 in sync mode: every worker's step s-1 was applied before anyone read). It is what the
 * `staleness` bound of stale mode limits. Its *lag* is the other side: how many other workers'
 * steps were applied here between the worker's read and its own update (0 in sync mode; a
 * straggler's updates have the largest lag in async mode, a fast worker's the largest staleness).
 *
 * Modes.
 *   sync   each chunk's gradients of step s are summed over all workers and applied once, divided
 *          by the number of workers (the ring's 'average'); a pull of step s is answered once every
 *          chunk has step s applied. A worker that leaves before pushing a step others wait for
 *          fails them (RING_ERR_PEER_LOST naming it): no step can complete without it.
 *   async  each push is applied on arrival, as it is (one worker's gradient, one update); a pull is
 *          answered at once with the current weights.
 *   stale  as async, but the pull after step s waits until s + 1 - (server clock) <= staleness
 *          (stale synchronous parallel): a worker is never more than `staleness` steps ahead of
 *          the slowest one still in the job; the slowest is never held back.
 *
 * Anything wrong a worker sends (a malformed message, an unknown key, a wrong length, a step other
 * than its next one, a mismatching hello) is a typed error sent to that worker, whose link is then
 * closed; the server goes on serving the others.
 */
export interface ServerStats {
  updates: number;
  maxStaleness: number;
  meanStaleness: number;
  maxLag: number;
  meanLag: number;
  /** Workers lost (link closed without goodbye), by rank. */
  lost: number[];
}

interface Worker {
  rank: number;
  link: Link;
  hello?: HelloMsg;
  /** The next step it may push. */
  step: number;
  /** Keys pushed for `step`. */
  pushed: Set<number>;
  /** The server's clock, and its count of applied worker steps, when this worker last read the weights. */
  readClock: number;
  readUpdates: number;
  /** A pull waiting for its answer: the step it ended. */
  waiting?: { step: number; staleness: number; lag: number };
  left?: 'bye' | 'lost' | 'refused';
}

/** What validate() makes of a message that fails its checks. */
interface Malformed {
  t: 'malformed';
  error: RingError;
}

export interface ParameterServerOptions {
  server: number;
  servers: number;
  tf: typeof TfCore;
  logger: Logger;
  /** Called once every worker of the job has left (the server may exit). */
  onIdle?: () => void;
}

export class ParameterServer {
  private job: Job | undefined;
  private readonly workers = new Map<number, Worker>();
  /** Clocks of workers that left, which no longer count (async/stale), and the clock all start at. */
  private startClock = 0;
  private weights: ChunkWeights | undefined;
  private init: { msg: InitMsg; got: Set<number> } | undefined;
  private ready = false;
  /**
   * Why this server can never become ready (its checkpoint would not load, or rank 0 left before
   * the initial weights): every worker is refused with it — also one whose hello comes later, or
   * it would wait for a 'ready' that never comes.
   */
  private cannotStart: RingError | undefined;
  private readonly pendingReady = new Set<Worker>();
  /** sync: sums of the step being accumulated, and how many workers added each chunk. */
  private sums = new Map<number, { acc: Float32Array; count: number }>();
  private applied = 0;
  private syncStep = 0;
  private readonly stat = { updates: 0, max: 0, sum: 0, maxLag: 0, sumLag: 0 };
  /** Worker steps applied (sync: all of a step's at once, when it completes). */
  private updatesDone = 0;
  private readonly lostRanks: number[] = [];
  private idle = false;

  constructor(private readonly o: ParameterServerOptions) {}

  private get name(): string {
    return `parameter server ${this.o.server}`;
  }

  stats(): ServerStats {
    const { updates, max, sum, maxLag, sumLag } = this.stat;
    return { updates, maxStaleness: max, meanStaleness: updates ? sum / updates : 0, maxLag, meanLag: updates ? sumLag / updates : 0, lost: [...this.lostRanks] };
  }

  /** A worker's authenticated link (the transport's handshake named its rank). */
  attach(rank: number, link: Link): void {
    const w: Worker = { rank, link, step: 0, pushed: new Set(), readClock: 0, readUpdates: 0 };
    const old = this.workers.get(rank);
    if (old && !old.left) {
      link.setHandlers({ data: () => {}, control: () => {}, validate: (m) => m, closed: () => {} });
      return this.refuse(w, new RingProtocolError(`${this.name}: rank ${rank} is connected already`, { server: this.o.server, rank }), false);
    }
    this.workers.set(rank, w);
    link.setHandlers({
      // A malformed message is answered like any bad input (a typed error to its sender), not by
      // the link closing under it without a word.
      validate: (m: Record<string, unknown>, from: string): ToServer | Malformed => {
        try {
          return validateToServer(m, from);
        } catch (e) {
          return { t: 'malformed', error: e as RingError };
        }
      },
      control: (m: ToServer | Malformed) =>
        this.guard(w, () => {
          if (m.t === 'malformed') throw m.error;
          this.control(w, m);
        }),
      data: (h: DataHeader, payload: Uint8Array) => this.guard(w, () => this.data(w, h, payload)),
      closed: (error: Error | undefined) => this.closed(w, error),
    });
  }

  /** Runs a handler; a typed error goes to the worker, anything else is a bug reported the same way. */
  private guard(w: Worker, fn: () => void): void {
    if (w.left) return;
    try {
      fn();
    } catch (e) {
      const err = e instanceof RingError ? e : new RingInternalError(`${this.name}: ${(e as Error)?.stack ?? e}`, { server: this.o.server });
      this.refuse(w, err);
    }
  }

  private send(w: Worker, m: ToWorker): void {
    w.link.sendControl(m);
  }

  /** Sends `err` to the worker, closes its link once it left, and goes on without it. */
  private refuse(w: Worker, err: RingError, known = true): void {
    if (w.left) return;
    w.left = 'refused';
    err.details.server ??= this.o.server;
    this.o.logger.warn(`${this.name}: refusing rank ${w.rank}: ${err.message}`);
    // Closed once the error has left (the link's end is then not news: see closed()); only then
    // does the worker count as gone, or a server whose last worker this was would exit first.
    w.link.sendControl({ t: 'error', error: serializeError(err) } satisfies ToWorker, () => {
      w.link.close();
      if (known) this.left(w);
    });
  }

  private closed(w: Worker, error: Error | undefined): void {
    if (w.left) return;
    w.left = 'lost';
    this.lostRanks.push(w.rank);
    const at = w.hello ? ` at step ${w.step}` : ' before its hello';
    this.o.logger.warn(`${this.name}: lost rank ${w.rank}${at}${error ? `: ${error.message}` : ''}${this.job?.mode === 'sync' ? '' : '; the other workers go on'}`);
    this.left(w);
  }

  private bad(w: Worker, what: string, field?: string): RingProtocolError {
    return new RingProtocolError(`${this.name}: rank ${w.rank} sent ${what}`, { server: this.o.server, rank: w.rank, ...(field && { field }) });
  }

  private control(w: Worker, m: ToServer): void {
    switch (m.t) {
      case 'hello':
        return this.hello(w, m);
      case 'init':
        return this.onInit(w, m);
      case 'pull':
        return this.pull(w, m.step);
      case 'lr':
        if (!this.ready || !this.weights || !w.hello) throw this.bad(w, "an 'lr' before the server was ready", 'lr');
        return this.weights.setLearningRate(m.value);
      case 'save':
        return void this.save(w, m.id, m.dir);
      case 'fetch':
        if (!this.ready || !w.hello) throw this.bad(w, "a 'fetch' before the server was ready", 'fetch');
        if (w.waiting || w.pushed.size > 0) throw this.bad(w, `a 'fetch' in the middle of step ${w.step}`, 'fetch');
        return this.sendWeights(w, { t: 'fetched', step: w.step });
      case 'bye':
        w.left = 'bye';
        w.link.close();
        return this.left(w);
    }
  }

  private hello(w: Worker, m: HelloMsg): void {
    if (w.hello) throw this.bad(w, 'a second hello', 'hello');
    if (m.rank !== w.rank) throw this.bad(w, `a hello for rank ${m.rank} on its own link`, 'rank');
    this.job = agreeOnJob(this.job, m, w.rank, this.name, this.o.server);
    w.hello = m;
    if (this.cannotStart) return this.refuse(w, this.cannotStart);
    if (this.ready) this.welcome(w);
    else this.pendingReady.add(w);
  }

  private onInit(w: Worker, m: InitMsg): void {
    if (!w.hello || w.rank !== 0 || this.init || this.ready) throw this.bad(w, "an 'init' out of turn (only rank 0 sends it, once, after its hello)", 'init');
    this.weights = new ChunkWeights(this.o.tf, this.o.server, { className: m.className, config: m.config });
    this.init = { msg: m, got: new Set() };
    const j = this.job!;
    if (j.restore) {
      const dir = j.restore;
      this.weights.load(dir, this.o.servers, j.chunks).then(
        (clock) => {
          this.o.logger.info(`${this.name}: restored ${j.chunks.size} chunks at step ${clock} from ${dir}`);
          this.becomeReady(clock);
        },
        (e: Error) => this.failAll(e instanceof RingError ? e : new RingInternalError(String(e))),
      );
    } else if (j.chunks.size === 0) this.becomeReady(0);
  }

  private becomeReady(clock: number): void {
    this.ready = true;
    this.startClock = clock;
    this.applied = 0;
    this.syncStep = clock;
    for (const w of this.pendingReady) if (!w.left) this.welcome(w);
    this.pendingReady.clear();
  }

  private welcome(w: Worker): void {
    w.step = this.startClock;
    w.readClock = this.startClock;
    w.readUpdates = this.updatesDone;
    this.send(w, { t: 'ready', step: this.startClock });
  }

  private data(w: Worker, h: DataHeader, payload: Uint8Array): void {
    const j = this.job;
    if (!j || !w.hello) throw this.bad(w, `a data ${frameText(h)} before its hello`, 'frame');
    const length = j.chunks.get(h.seq);
    if (length === undefined) throw this.bad(w, `a ${frameText(h)} for key ${h.seq}, which this server does not hold`, 'key');
    if (h.chunk === OP_INIT) {
      if (w.rank !== 0 || !this.init || this.ready || j.restore) throw this.bad(w, `an initial-weights ${frameText(h)} out of turn`, 'frame');
      if (this.init.got.has(h.seq)) throw this.bad(w, `key ${h.seq}'s initial weights twice`, 'key');
      this.weights!.create(h.seq, this.decode(w, h, payload, length, 0));
      this.init.got.add(h.seq);
      if (this.init.got.size === j.chunks.size) this.becomeReady(0);
      return;
    }
    if (h.chunk !== OP_PUSH) throw this.bad(w, `a ${frameText(h)} of unknown op ${h.chunk}`, 'frame');
    if (!this.ready) throw this.bad(w, `a push before the server was ready`, 'frame');
    if (w.waiting) throw this.bad(w, `a push for step ${h.step} while its pull of step ${w.waiting.step} is unanswered`, 'step');
    if (h.step !== w.step) {
      const when = h.step > w.step ? 'from the future' : 'from the past';
      throw this.bad(w, `a push for step ${h.step} ${when}: its next step is ${w.step}`, 'step');
    }
    if (w.pushed.has(h.seq)) throw this.bad(w, `key ${h.seq} twice in step ${h.step}`, 'key');
    const codec = j.codec === 'none' ? 0 : codecFor(j.codec)!.code;
    const grad = this.decode(w, h, payload, length, codec);
    w.pushed.add(h.seq);
    if (j.mode !== 'sync') {
      this.weights!.apply(h.seq, grad);
      return;
    }
    this.checkSyncWaits();
    if (w.left) return;
    let s = this.sums.get(h.seq);
    if (!s) this.sums.set(h.seq, (s = { acc: new Float32Array(length), count: 0 }));
    const acc = s.acc;
    for (let i = 0; i < length; i++) acc[i] += grad[i];
    if (++s.count < j.size) return;
    // The ring's 'average': the sum over the workers, divided once at the end.
    for (let i = 0; i < length; i++) acc[i] /= j.size;
    this.weights!.apply(h.seq, acc);
    this.sums.delete(h.seq);
    if (++this.applied === j.chunks.size) {
      this.applied = 0;
      this.syncStep++;
      this.updatesDone += j.size;
      this.answerPulls();
    }
  }

  /** A frame's payload as float32 values: checked against the chunk's length and the job's codec. */
  private decode(w: Worker, h: DataHeader, payload: Uint8Array, length: number, code: number): Float32Array {
    const out = decodeFrame(h, payload, length, code, this.job!.codec);
    if (out instanceof Float32Array) return out;
    throw this.bad(w, out.problem, out.field);
  }

  private pull(w: Worker, step: number): void {
    const j = this.job;
    if (!j || !w.hello || !this.ready) throw this.bad(w, 'a pull before the server was ready', 'pull');
    if (w.waiting) throw this.bad(w, `a second pull (step ${step}) while step ${w.waiting.step}'s is unanswered`, 'pull');
    if (step !== w.step) throw this.bad(w, `a pull for step ${step}; its next step is ${w.step}`, 'step');
    if (w.pushed.size !== j.chunks.size) throw this.bad(w, `a pull for step ${step} after pushing ${w.pushed.size} of the ${j.chunks.size} chunks this server holds`, 'pull');
    const staleness = Math.max(0, step - w.readClock);
    // sync: a step's updates are applied together, the worker's own among them (the last
    // pusher's completes the step before its pull arrives): no other update came between.
    const lag = j.mode === 'sync' ? 0 : this.updatesDone - w.readUpdates;
    if (j.mode !== 'sync') this.updatesDone++;
    this.stat.updates++;
    this.stat.sum += staleness;
    this.stat.max = Math.max(this.stat.max, staleness);
    this.stat.sumLag += lag;
    this.stat.maxLag = Math.max(this.stat.maxLag, lag);
    w.waiting = { step, staleness, lag };
    w.step = step + 1;
    w.pushed.clear();
    this.answerPulls();
  }

  /** The server's clock: the smallest clock of the workers still in the job. */
  private clock(): number {
    const j = this.job!;
    let min = Infinity;
    for (let r = 0; r < j.size; r++) {
      const w = this.workers.get(r);
      if (!w || !w.hello) min = Math.min(min, this.startClock);
      else if (!w.left) min = Math.min(min, w.step);
    }
    return min === Infinity ? this.syncStep : min;
  }

  private answerPulls(): void {
    const j = this.job!;
    const clock = this.clock();
    for (const w of this.workers.values()) {
      const p = w.waiting;
      if (!p || w.left) continue;
      const may = j.mode === 'sync' ? this.syncStep > p.step : j.mode === 'async' || p.step + 1 - clock <= j.staleness;
      if (!may) continue;
      w.waiting = undefined;
      this.sendWeights(w, { t: 'pulled', step: p.step, staleness: p.staleness, lag: p.lag, total: this.updatesDone });
    }
  }

  /** Every chunk's current weights, then `last`: a read of the weights (the staleness of the worker's next update counts from here). */
  private sendWeights(w: Worker, last: ToWorker): void {
    const j = this.job!;
    const clock = j.mode === 'sync' ? this.syncStep : this.clock();
    for (const key of j.keys) {
      // A copy: the link may write it later, and an update in the meantime must not tear it.
      const v = this.weights!.read(key).slice();
      w.link.sendData({ seq: key, step: clock, chunk: OP_WEIGHTS, codec: 0, scale: 1 }, new Uint8Array(v.buffer, v.byteOffset, v.byteLength), () => {});
    }
    this.send(w, last);
    w.readClock = clock;
    w.readUpdates = this.updatesDone;
  }

  /**
   * sync: a step that waits for a worker who left cannot complete. Everyone who pushed or pulled
   * in it gets RING_ERR_PEER_LOST naming the worker, instead of waiting for ever.
   */
  private checkSyncWaits(): void {
    const j = this.job;
    if (!j || j.mode !== 'sync' || !this.ready) return;
    const gone = [...this.workers.values()].filter((w) => w.left && w.hello && w.step <= this.syncStep);
    if (gone.length === 0) return;
    for (const w of this.workers.values()) {
      if (w.left || !(w.waiting || w.pushed.size > 0)) continue;
      const g = gone[0];
      const how = g.left === 'bye' ? 'finished (said goodbye)' : g.left === 'lost' ? 'was lost' : 'was refused';
      this.refuse(
        w,
        new RingPeerLostError(`${this.name}: worker rank ${g.rank} ${how} before step ${this.syncStep}: in sync mode no step completes without every worker's gradients`, {
          server: this.o.server,
          rank: w.rank,
          ranks: gone.map((x) => x.rank),
        }),
      );
    }
  }

  private left(w: Worker): void {
    this.pendingReady.delete(w);
    if (!this.ready && w.rank === 0) {
      // Nobody else can initialise the server: the workers waiting for it are told why now.
      this.cannotStart ??= new RingPeerLostError(`${this.name}: worker rank 0 left before it sent the initial weights: the server cannot start`, { server: this.o.server, ranks: [0] });
      for (const p of [...this.pendingReady]) this.refuse(p, this.cannotStart);
    }
    if (this.job && this.ready) {
      if (this.job.mode === 'sync') this.checkSyncWaits();
      else this.answerPulls(); // the clock may move on without it
    }
    const j = this.job;
    if (!j || this.idle) return;
    let all = true;
    for (let r = 0; r < j.size; r++) if (!this.workers.get(r)?.left) all = false;
    if (all) {
      this.idle = true;
      this.o.onIdle?.();
    }
  }

  /** Everyone gets `err` (the server cannot go on: a checkpoint that would not load). */
  private failAll(err: RingError): void {
    this.cannotStart ??= err;
    for (const w of this.workers.values()) this.refuse(w, err);
  }

  private async save(w: Worker, id: number, dir: string): Promise<void> {
    if (!this.ready || !this.weights) return this.guard(w, () => { throw this.bad(w, "a 'save' before the server was ready", 'save'); });
    if (!isAbsolute(dir)) return this.guard(w, () => { throw new RingInvalidArgError(`${this.name}: saveServerState needs an absolute directory, got '${peerText(dir, 300)}'`, { server: this.o.server, field: 'dir' }); });
    try {
      const path = await this.weights.save(dir, this.o.servers, this.job!.mode === 'sync' ? this.syncStep : this.clock());
      if (!w.left) this.send(w, { t: 'saved', id, path });
    } catch (e) {
      const err = e instanceof RingError ? e : new RingInvalidArgError(`${this.name}: cannot write its state to ${peerText(dir, 300)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { server: this.o.server });
      this.refuse(w, err);
    }
  }

  close(): void {
    for (const w of this.workers.values()) w.link.close();
    this.weights?.dispose();
  }
}
