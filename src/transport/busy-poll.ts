import { schedYield } from '../kernels/index.js';
import type { Link } from './link.js';

/** Busy polling gives its core away once nothing has arrived for this long (see poll). */
const YIELD_AFTER_MS = 0.05;

const awake = (l: Link) => l.setPolling?.(true);
const asleep = (l: Link) => l.setPolling?.(false);
const pollLink = (l: Link) => l.poll?.();

/**
 * Busy polling. A process that sleeps in epoll_wait pays for its wake-up when the neighbour's
 * bytes arrive (measured here: a 4-byte ws round trip is 184 us median when both sides sleep,
 * 43 us when they keep polling). So while an operation is pending and messages keep coming, the
 * loop re-arms itself with setImmediate, which makes libuv poll without blocking. It stops when
 * nothing is pending or nothing has arrived for busyPollUs, so an idle or stuck rank sleeps.
 * The communicator polls its two ring links; the point-to-point engine, the links it has open.
 */
export class BusyPoller {
  private lastProgress = 0;
  private on = false;
  private stopped = false;

  constructor(
    /** Calls `f` on every link to poll. */
    private readonly links: (f: (l: Link) => void) => void,
    /** Polls for up to busyPollUs after the last message; 0 = never. Read each time: it may change. */
    private readonly options: { readonly busyPollUs?: number },
    /** How many operations are pending: polling stops at none. */
    private readonly pending: () => number,
  ) {}

  /** Whether the loop is polling now (tests). */
  get polling(): boolean {
    return this.on;
  }

  /** Something arrived or started: (re)start polling if an operation is pending. */
  progress(): void {
    const limit = this.options.busyPollUs ?? 0;
    if (limit <= 0 || this.pending() === 0) return;
    this.lastProgress = performance.now();
    if (this.on) return;
    this.on = true;
    this.links(awake);
    setImmediate(this.poll);
  }

  /** The ring has failed: polling ends at its next turn. */
  stop(): void {
    this.stopped = true;
  }

  private readonly poll = (): void => {
    if (this.pending() === 0 || this.stopped || performance.now() - this.lastProgress > (this.options.busyPollUs ?? 0) / 1000) {
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
    if (performance.now() - this.lastProgress > YIELD_AFTER_MS) schedYield?.();
    setImmediate(this.poll);
  };
}
