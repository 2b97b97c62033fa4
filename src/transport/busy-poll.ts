import { schedYield } from '../kernels/index.js';
import type { Link } from './link.js';
import { RunQueueClock } from './run-queue.js';

/** Busy polling gives its core away once nothing has arrived for this long (see poll). */
const YIELD_AFTER_MS = 0.05;
/** Polling shorter than this is never measured (a fast operation pays no system call for it). */
const SAMPLE_AFTER_MS = 0.2;
/** Polling time (summed over operations) per verdict on contention. */
const WINDOW_MS = 5;
/** A window in which the thread waited this share of the time or more for a CPU: contended. */
const CONTENDED = 0.2;
/** After a contended window no polling for this long, doubling per contended probe up to the max. */
const BACKOFF_MS = 20;
const MAX_BACKOFF_MS = 2000;

const awake = (l: Link) => l.setPolling?.(true);
const asleep = (l: Link) => l.setPolling?.(false);
const pollLink = (l: Link) => l.poll?.();

/**
 * Whether busy polling pays on this thread now. Polling helps only while the ranks it waits for
 * have cores of their own: on a machine with more runnable threads than cores (ranks of several
 * emulated hosts, or other work), a poller holds a core that the rank it polls for needs, and
 * every message then waits for a time slice (measured: a 64 MiB all-reduce over 4 emulated hosts
 * on 2 cores at 0.22x Gloo with polling, against 0.76x without). The one signal that tells is the
 * thread's own run-queue time while it polls (a poller is always runnable: every microsecond it
 * waited is one the scheduler gave away). So polling time is measured in windows; after a window
 * in which the thread waited for a CPU CONTENDED or more of the time, polling stops for a
 * back-off that doubles while the contention lasts (20 ms .. 2 s: a probe costs at most a window
 * in 400), and resets once a window is clean. One per thread: every poller of a thread shares it.
 */
export class Contention {
  private offUntil = 0;
  private backoff = BACKOFF_MS;
  private wall = 0;
  private waited = 0;
  /** Contended windows so far (tests, diagnostics). */
  verdicts = 0;

  constructor(readonly clock: { read(): number | undefined } = new RunQueueClock()) {}

  /** Whether polling may start at `now` (ms, performance.now()). */
  allows(now: number): boolean {
    return now >= this.offUntil;
  }

  /**
   * Adds a stretch of polling: `wallMs` long, during which the thread waited `waitedNs` for a
   * CPU. False when it closed a contended window: the caller stops polling.
   */
  add(now: number, wallMs: number, waitedNs: number): boolean {
    this.wall += wallMs;
    this.waited += waitedNs / 1e6;
    if (this.wall < WINDOW_MS) return true;
    const share = this.waited / this.wall;
    this.wall = this.waited = 0;
    if (share < CONTENDED) {
      this.backoff = BACKOFF_MS;
      return true;
    }
    this.verdicts++;
    this.offUntil = now + this.backoff;
    this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2);
    return false;
  }
}

let threadContention: Contention | undefined;
/** This thread's Contention (a worker thread has its own module instance, hence its own). */
const contention = (): Contention => (threadContention ??= new Contention());

/**
 * Busy polling. A process that sleeps in epoll_wait pays for its wake-up when the neighbour's
 * bytes arrive (measured here: a 4-byte ws round trip is 184 us median when both sides sleep,
 * 43 us when they keep polling). So while an operation is pending and messages keep coming, the
 * loop re-arms itself with setImmediate, which makes libuv poll without blocking. It stops when
 * nothing is pending, when nothing has arrived for busyPollUs (the message polled for does not
 * come sooner than a wake-up would bring it), or when the thread is losing its core to others
 * (see Contention), so an idle, stuck or crowded rank sleeps.
 * The communicator polls its two ring links; the point-to-point engine, the links it has open.
 */
export class BusyPoller {
  private lastProgress = 0;
  private on = false;
  private stopped = false;
  /** Start of the measured stretch of this polling run (0: not measuring yet), and its run-queue reading. */
  private since = 0;
  private startedAt = 0;
  private waitedAt = 0;

  constructor(
    /** Calls `f` on every link to poll. */
    private readonly links: (f: (l: Link) => void) => void,
    /**
     * Polls for up to busyPollUs after the last message; 0 = never. Read each time: it may change.
     * busyPollBackoff true: polling stops for a while when the thread is crowded (see Contention).
     */
    private readonly options: { readonly busyPollUs?: number; readonly busyPollBackoff?: boolean },
    /** How many operations are pending: polling stops at none. */
    private readonly pending: () => number,
    /** This thread's Contention unless given (tests); made on first use, so without busyPollBackoff no /proc file is opened. */
    private readonly given?: Contention,
  ) {}

  /** Whether the loop is polling now (tests). */
  get polling(): boolean {
    return this.on;
  }

  /** Something arrived or started: (re)start polling if an operation is pending. */
  progress(): void {
    const limit = this.options.busyPollUs ?? 0;
    if (limit <= 0 || this.pending() === 0) return;
    const now = performance.now();
    this.lastProgress = now;
    if (this.on || (this.options.busyPollBackoff === true && !this.crowd.allows(now))) return;
    this.on = true;
    this.startedAt = now;
    this.since = 0;
    this.links(awake);
    setImmediate(this.poll);
  }

  /** The ring has failed: polling ends at its next turn. */
  stop(): void {
    this.stopped = true;
  }

  private get crowd(): Contention {
    return this.given ?? contention();
  }

  /** Measures polling past its first SAMPLE_AFTER_MS; false when the thread turned out crowded. */
  private measure(now: number, ending: boolean): boolean {
    if (this.options.busyPollBackoff !== true) return true;
    if (this.since === 0) {
      if (ending || now - this.startedAt < SAMPLE_AFTER_MS) return true;
      const w = this.crowd.clock.read();
      if (w === undefined) return true;
      this.since = now;
      this.waitedAt = w;
      return true;
    }
    if (!ending && now - this.since < WINDOW_MS) return true;
    const w = this.crowd.clock.read();
    if (w === undefined) return true;
    const ok = this.crowd.add(now, now - this.since, w - this.waitedAt);
    this.since = now;
    this.waitedAt = w;
    return ok;
  }

  private readonly poll = (): void => {
    const now = performance.now();
    const done = this.pending() === 0 || this.stopped || now - this.lastProgress > (this.options.busyPollUs ?? 0) / 1000;
    if (!this.measure(now, done) || done) {
      this.on = false;
      // Going to sleep: the neighbours must wake this process through the socket again. (A last
      // look at the mailboxes may deliver something, which starts polling anew.)
      this.links(asleep);
      if (this.on) this.links(awake);
      return;
    }
    this.links(pollLink);
    // A neighbour that is late may not have a core (a busy machine): from then on give ours away
    // on every turn if another thread wants it (sched_yield), instead of holding it for whole
    // time slices while the rank we wait for cannot run. Not at once: yielding on every turn
    // measured slower on an idle machine (a 4-byte all-reduce 150-170 us instead of 75-90).
    if (now - this.lastProgress > YIELD_AFTER_MS) schedYield?.();
    setImmediate(this.poll);
  };
}
