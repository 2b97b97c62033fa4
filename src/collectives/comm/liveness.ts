import { deserializeError, RingPeerLostError, RingProtocolError, RingShutdownError, RingTimeoutError, type RingError } from '../../errors.js';
import type { Link } from '../../transport/link.js';
import type { AbortMsg } from '../../transport/messages.js';
import type { RingPlace } from '../collective.js';
import { label, type OpDescriptor } from '../descriptor.js';
import type { OpState, OpTable } from './op-table.js';

/**
 * Heartbeats, for naming a stalled rank. A stopped process (SIGSTOP, a blocked event loop, a cut
 * network) keeps its sockets open, so only silence gives it away — and in a ring everyone behind
 * it falls silent too. Each rank therefore tells its LEFT neighbour every `beatMs` that it is
 * alive: the leftward direction carries no data, so a heartbeat is never stuck behind megabytes of
 * frames, and only the rank just left of a stalled one sees its right neighbour go quiet.
 * The interval follows the operation timeout: timeoutMs / 8, within [20 ms, 1 s] (1 s without a
 * timeout). Each heartbeat says how often they come (the first goes at once), so ranks configured
 * differently still agree on what counts as silence.
 */
export function beatInterval(timeoutMs: number): number {
  return timeoutMs > 0 ? Math.min(MAX_BEAT_MS, Math.max(MIN_BEAT_MS, Math.round(timeoutMs / 8))) : MAX_BEAT_MS;
}
const MIN_BEAT_MS = 20;
const MAX_BEAT_MS = 1000;
/**
 * Heartbeats a neighbour may send beyond one per MIN_BEAT_MS since this communicator started.
 * Counted over the link's whole life, so beats that arrive together still fit: those a neighbour
 * sent while this rank was busy, or before it had formed its end of the ring (20 s of them at the
 * fastest rate). A peer that sends more is breaking the protocol.
 */
const EXTRA_BEATS = 1000;
/** A right neighbour silent this many heartbeat intervals is named as the stalled rank. */
const SILENT_BEATS = 4;
/** A rank with no such evidence waits this many intervals past its timeout for the verdict. */
const GRACE_BEATS = SILENT_BEATS + 2;

/** How long a lost neighbour waits for an abort that names the rank really gone (see peerLost). */
const LOSS_GRACE_MS = 250;

/** What liveness needs of the communicator it watches for. */
export interface LivenessHost extends RingPlace {
  /** The ring has failed (fatal has run). */
  broken(): boolean;
  /** shutdown() has been called. */
  closing(): boolean;
  /** Fails the ring with `e` (see Communicator.fatal). */
  fatal(e: RingError, opts?: { quietIfIdle?: boolean }): void;
  /** `peer` broke the protocol: the ring fails, naming it. */
  protocol(peer: number, what: string): void;
  /** The right neighbour said goodbye and closed its link: what it was sent counts as delivered. */
  rightLeft(): void;
}

/**
 * Whether the ring is alive: heartbeats to the left and silence from the right, every pending
 * operation's deadline, the grace a lost neighbour gets before it is blamed, and what a closed
 * link or a neighbour's goodbye means. It decides who is named when something stalls or goes;
 * the host fails the ring.
 *
 * An operation that outlives `timeoutMs` fails on every rank naming the stalled rank where one can
 * be seen (see beatInterval): the rank left of it fails at once with "rank X has sent nothing for
 * N ms", every other rank gives that verdict up to GRACE_BEATS intervals to arrive before failing
 * with its own view (which ranks have not reached the operation, or whom it waits for).
 */
export class Liveness {
  readonly beatMs: number;
  private beat: NodeJS.Timeout | undefined;
  /** When the right neighbour last sent anything (heartbeats included), and its heartbeat interval. */
  private lastFromRight = Date.now();
  private rightBeatMs: number;
  /** Heartbeats received from each side, and since when they are counted. */
  private readonly beatsFrom = { left: 0, right: 0 };
  private readonly beatsSince = Date.now();
  /** A lost neighbour waiting out LOSS_GRACE_MS for an abort that explains it (see peerLost). */
  private lossPending: NodeJS.Timeout | undefined;

  /** The latest operation each rank was seen in (its descriptor arrived here), for stall warnings. */
  private readonly latest: Array<{ seq: number; desc: OpDescriptor } | undefined>;

  constructor(
    private readonly host: LivenessHost,
    private readonly timeoutMs: number,
    private readonly ops: OpTable,
    private readonly stallWarningMs = 0,
    private readonly warn: (message: string) => void = () => {},
  ) {
    this.beatMs = this.rightBeatMs = host.size > 1 ? beatInterval(timeoutMs) : 0;
    this.latest = new Array(host.size).fill(undefined);
  }

  /** Rank `origin` has reached operation `seq`. */
  seen(origin: number, seq: number, desc: OpDescriptor): void {
    const l = this.latest[origin];
    if (!l || seq > l.seq) this.latest[origin] = { seq, desc };
  }

  /** Starts the heartbeats to the left neighbour (once its link's handlers are set). */
  start(leftLink: Link | undefined): void {
    if (this.host.size > 1) {
      const beat = () => leftLink!.sendControl({ t: 'beat', rank: this.host.rank, everyMs: this.beatMs });
      beat();
      this.beat = setInterval(beat, this.beatMs);
      this.beat.unref();
    }
  }

  /** Anything from the right neighbour shows it alive. */
  heardFromRight(): void {
    this.lastFromRight = Date.now();
  }

  /**
   * A heartbeat from a neighbour; the right one's says how often they come. Returns what is wrong
   * when they come faster than any rank sends them (at most one per MIN_BEAT_MS).
   */
  beatFrom(from: 'left' | 'right', everyMs: number): string | undefined {
    if (from === 'right') this.rightBeatMs = Math.min(everyMs, MAX_BEAT_MS);
    const n = ++this.beatsFrom[from];
    const ms = Date.now() - this.beatsSince;
    if (n > EXTRA_BEATS + ms / MIN_BEAT_MS) return `sent ${n} heartbeats in ${ms} ms (at most one per ${MIN_BEAT_MS} ms)`;
    return undefined;
  }

  /** An operation starts here: it fails if it outlives timeoutMs. */
  watch(st: OpState): void {
    if (this.stallWarningMs > 0 && this.host.size > 1) {
      st.started = Date.now();
      this.stalls.arm(this.stallWarningMs);
    }
    if (this.timeoutMs <= 0) return;
    st.deadline = Date.now() + this.timeoutMs;
    this.deadlines.arm(this.timeoutMs);
  }

  /**
   * Stall warnings, for any collective (a rank that runs one batch more than the others waits in
   * the next all-reduce until its timeout, silently, otherwise). One timer, as for deadlines; each
   * operation is named once, with the ranks that have not reached it and where each was last seen.
   * They are alive (heartbeats keep arriving, or the ring would have failed): busy elsewhere.
   */
  private readonly stalls = new DueTimer((now) => this.checkStalls(now));
  private checkStalls(now: number): number {
    if (this.host.broken() || this.host.closing()) return Infinity;
    let next = Infinity;
    for (const st of this.ops.running()) {
      if (st.stallWarned || st.started === undefined) continue;
      const due = st.started + this.stallWarningMs;
      if (due <= now) {
        st.stallWarned = true;
        this.warn(this.stallMessage(st, now - st.started));
      } else next = Math.min(next, due);
    }
    return next;
  }

  private stallMessage(st: OpState, waitedMs: number): string {
    const missing = st.table.missing();
    const what = `rank ${this.host.rank}: ${label(st.desc!, st.seq)} has waited ${(waitedMs / 1000).toFixed(1)} s`;
    if (missing.length === 0) return `${what} for its data (every rank has reached it)`;
    const where = missing.map((r) => {
      const l = this.latest[r];
      return l ? `rank ${r} was last seen in ${label(l.desc, l.seq)}` : `rank ${r} has not been seen in any operation here`;
    });
    return (
      `${what}: rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} ${missing.length > 1 ? 'have' : 'has'} not reached it (${where.join('; ')}). ` +
      `The ring is alive (heartbeats arrive), so they are busy elsewhere: do all ranks run the same number of batches and collectives? ` +
      `(This warning comes after RINGREDUCE_STALL_WARNING / stallWarningMs.)`
    );
  }

  /** Stops heartbeats and deadlines (shutdown, failure). */
  stop(): void {
    clearInterval(this.beat);
    this.deadlines.stop();
    this.stalls.stop();
  }

  /** The ring has failed: a lost neighbour's grace period ends too. */
  stopAll(): void {
    clearTimeout(this.lossPending);
    this.lossPending = undefined;
    this.stop();
  }

  // ---- goodbyes and closed links ---------------------------------------------------------------
  /** Neighbours that said goodbye (shutdown()): each finished every operation it ran. */
  private readonly byes = new Set<number>();

  /** A goodbye from neighbour `peer`, saying it is rank `rank`: what is wrong with it, if anything. */
  bye(peer: number, rank: number): string | undefined {
    if (rank !== peer) return `said goodbye as rank ${rank}`;
    this.byes.add(rank);
    return undefined;
  }

  /** Why operation `seq` cannot start here: a neighbour has said goodbye (undefined: none has). */
  refusal(desc: OpDescriptor, seq: number): RingShutdownError | undefined {
    if (this.byes.size === 0) return undefined;
    const { rank } = this.host;
    const gone = [...this.byes].sort((a, b) => a - b);
    return new RingShutdownError(`rank ${rank}: ${label(desc, seq)} cannot run: rank ${gone.join(', ')} has already called shutdown()`, {
      rank,
      ranks: gone,
      op: desc.kind,
      seq,
    });
  }

  /** A write to the right neighbour failed. */
  writeFailed(err: Error): void {
    // After its goodbye the right neighbour closes: a failed write to it is expected (see rightLeft).
    if (this.byes.has(this.host.right)) return;
    this.peerLost(this.host.right, 'right', `cannot be reached (${err.message})`);
  }

  /** The link to neighbour `peer` closed; `error` says why (undefined: closed without one). */
  linkClosed(peer: number, side: 'left' | 'right', error: Error | undefined): void {
    const host = this.host;
    if (host.closing() || host.broken()) return;
    // The link dropped a peer that sent something undecodable: that is the peer's protocol error.
    if (error instanceof RingProtocolError) return host.protocol(peer, `(${side} neighbour) broke the protocol: ${error.message}`);
    if (this.byes.has(peer)) {
      // A neighbour that said goodbye finished every operation it ran; see LivenessHost.rightLeft.
      // Gone on the left, it has sent all it ever will (its messages all came before its close):
      // what is still pending here for want of its data never completes.
      if (side === 'right') return host.rightLeft();
      const starved = [...this.ops.values()].some((s) => s.resolve && !(s.table.checked && s.coll!.received));
      if (!starved) return;
    }
    const how = this.byes.has(peer) ? 'called shutdown()' : `is gone (${error?.message ?? 'connection closed'})`;
    // Idle, this is how a job ends whose ranks exit without shutdown(): the next call (if any) raises it.
    this.peerLost(peer, side, how, { quietIfIdle: true });
  }

  /** The ring is broken at `peer`: fails everything, naming it and the first pending operation. */
  peerLost(peer: number, side: 'left' | 'right' | 'direct', how: string, opts: { quietIfIdle?: boolean } = {}, graced = false): void {
    const host = this.host;
    if (host.closing() || host.broken() || this.lossPending) return;
    const pending = this.ops.running();
    if (!graced && pending.length > 0 && host.size > 2) {
      // A neighbour that closes its links may only be reacting to a failure further along (it
      // failed, sent its abort, closed): that abort — or the one coming round the other way — names
      // the rank that is really gone. Give it a moment to arrive before blaming the neighbour.
      this.lossPending = setTimeout(() => {
        this.lossPending = undefined;
        this.peerLost(peer, side, how, opts, true);
      }, LOSS_GRACE_MS);
      return;
    }
    const labels = pending.map((s) => label(s.desc!, s.seq));
    const during = labels.length ? ` while ${labels.join(', ')} ${labels.length > 1 ? 'were' : 'was'} pending` : '';
    host.fatal(
      new RingPeerLostError(`rank ${host.rank}: rank ${peer} (${side === 'direct' ? 'direct link' : `${side} neighbour`}) ${how}${during}`, {
        rank: host.rank,
        ranks: [peer],
        op: pending[0]?.desc!.kind,
        seq: pending[0]?.seq,
      }),
      opts,
    );
  }

  /** Every pending operation's deadline, on one timer (see DueTimer). */
  private readonly deadlines = new DueTimer((now) => this.checkDeadlines(now));
  private checkDeadlines(now: number): number {
    if (this.host.broken()) return Infinity;
    let next = Infinity;
    for (const st of this.ops.values()) {
      if (!st.resolve || st.deadline === 0) continue;
      if (st.deadline <= now && now - st.deadline > this.beatMs && this.host.size > 1) {
        // This timer ran late: this process had no CPU or its event loop was blocked, and so had
        // its operation. What arrived meanwhile has not been read yet; the verdict waits until
        // the process has run for GRACE_BEATS intervals (a neighbour's own deadline judges a rank
        // that stays stalled).
        st.deadline = now + GRACE_BEATS * this.beatMs;
        next = Math.min(next, st.deadline);
      } else if (st.deadline <= now) {
        const expiry = st.deadline;
        st.deadline = 0;
        this.onTimeout(st, expiry);
      } else next = Math.min(next, st.deadline);
    }
    return next;
  }

  /**
   * `st` has run out of time (at `expiry`). With a silent right neighbour this rank names it now;
   * otherwise it checks again every heartbeat, for up to GRACE_BEATS of them, so that the verdict
   * of the rank next to a stalled one (an abort) can arrive first.
   */
  private onTimeout(st: OpState, expiry: number): void {
    // After setImmediate, input that queued up while this process was busy (heartbeats) has been read.
    setImmediate(() => {
      if (!st.resolve || this.host.broken()) return;
      const now = Date.now();
      const silent = now - this.lastFromRight;
      const stalledRight = this.host.size > 1 && silent >= SILENT_BEATS * Math.max(this.beatMs, this.rightBeatMs);
      if (stalledRight || now - expiry >= GRACE_BEATS * this.beatMs) {
        this.host.fatal(this.timeoutError(st, stalledRight ? silent : undefined));
      } else {
        st.timer = setTimeout(() => this.onTimeout(st, expiry), this.beatMs);
      }
    });
  }

  private timeoutError(st: OpState, rightSilentMs?: number): RingTimeoutError {
    const { rank, left, right } = this.host;
    const d = st.desc!;
    const missing = st.table.missing();
    if (rightSilentMs !== undefined) {
      return new RingTimeoutError(
        `rank ${rank}: ${label(d, st.seq)} timed out after ${this.timeoutMs} ms: rank ${right} (right neighbour) ` +
          `has sent nothing for ${rightSilentMs} ms (stopped, its event loop blocked, or the network to it down)`,
        { rank, ranks: [right], op: d.kind, seq: st.seq },
      );
    }
    const waiting = missing.length
      ? `ranks ${missing.join(', ')} have not reached it`
      : !st.coll!.received
        ? `still waiting for data from rank ${left} (left neighbour)`
        : `still waiting for rank ${right} (right neighbour) to take ${st.pendingSends} frame(s)`;
    return new RingTimeoutError(`rank ${rank}: ${label(d, st.seq)} timed out after ${this.timeoutMs} ms: ${waiting}`, {
      rank,
      ranks: missing.length ? missing : [left],
      op: d.kind,
      seq: st.seq,
    });
  }
}

/**
 * One timer for many due times (a timer per operation measured ~2 us of a 4-byte all-reduce):
 * armed for the earliest, and when it fires `fire` handles what is due and returns the next due
 * time (ms since epoch; Infinity for none), for which it re-arms itself.
 */
class DueTimer {
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly fire: (now: number) => number) {}
  /** Arms for `ms` from now, unless already armed (for an earlier time). */
  arm(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(this.run, Math.max(1, ms));
    this.timer.unref();
  }
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
  private readonly run = (): void => {
    this.timer = undefined;
    const now = Date.now();
    const next = this.fire(now);
    if (next !== Infinity) this.arm(next - now);
  };
}

/** This rank's error for an abort from `m.origin`: the same kind of error, saying where it began. */
export function abortError(rank: number, m: AbortMsg): RingError {
  const cause = deserializeError(m.error);
  return new (cause.constructor as new (msg: string, d: object) => RingError)(
    `rank ${rank}: aborted because rank ${m.origin} failed: ${m.error.message}`,
    { ...m.error.details, rank },
  );
}
