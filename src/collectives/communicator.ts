import {
  deserializeError,
  RingError,
  RingInternalError,
  RingPeerLostError,
  RingProtocolError,
  RingShutdownError,
  RingTimeoutError,
  serializeError,
} from '../errors.js';
import { dtypeByCode } from '../dtypes.js';
import { wireBytesPerElement } from '../compression/registry.js';
import { schedYield } from '../kernels/index.js';
import type { Logger } from '../logger.js';
import type { Link } from '../transport/link.js';
import type { LinkControlMessage } from '../transport/messages.js';
import type { DataHeader } from '../transport/wire.js';
import type { Collective, OpContext } from './collective.js';
import { label, mismatchError, sameDescriptor, firstDifference, validateDescriptor, type OpDescriptor } from './descriptor.js';
import { mod } from './schedule.js';

export interface CommunicatorOptions {
  /** Bytes per data frame (the pipeline's unit). */
  chunkBytes: number;
  /** Data frames on the wire per link before further sends wait for earlier ones to flush. */
  maxInflight: number;
  /** Per-operation timeout in ms; 0 disables it. */
  timeoutMs: number;
  /**
   * While an operation is pending, keep the event loop polling (no sleep) for up to this many
   * microseconds after the last message arrived; 0 = never. See busyPoll().
   */
  busyPollUs?: number;
  logger: Logger;
}

/** One collective in progress (or, for a future sequence number, what arrived for it early). */
interface OpState {
  seq: number;
  desc?: OpDescriptor;
  coll?: Collective<unknown>;
  ctx?: OpContext;
  descs: (OpDescriptor | undefined)[];
  inline: (Uint8Array | undefined)[];
  descCount: number;
  leftChecked: boolean;
  leftMismatch: boolean;
  tableChecked: boolean;
  /**
   * Frames from the left that arrived before they could be applied: a copy, or the frame's own
   * shared-memory slot kept until then (with the function that hands it back).
   */
  held: Array<[DataHeader, Uint8Array, (() => void) | undefined]>;
  pendingSends: number;
  /** When it times out (ms since epoch; 0 = never), and the timer of its grace period, if in one. */
  deadline: number;
  timer?: NodeJS.Timeout;
  resolve?: (v: unknown) => void;
  reject?: (e: Error) => void;
}

interface QueuedSend {
  st: OpState;
  header: DataHeader;
  /** The bytes, or (a frame made when it leaves) how to make them: see OpContext.sendFilled. */
  payload: Uint8Array | { bytes: number; fill: (dst: Uint8Array) => number };
}

/**
 * Frame buffers reused across operations (a fresh one per frame costs page faults): for frames
 * made when they leave on links without a free shared-memory slot. A few per size are kept.
 */
class FramePool {
  private readonly free = new Map<number, Uint8Array[]>();
  take(bytes: number): Uint8Array {
    return this.free.get(bytes)?.pop() ?? new Uint8Array(bytes);
  }
  give(b: Uint8Array, keep: number): void {
    const list = this.free.get(b.byteLength) ?? [];
    if (list.length < keep) list.push(b);
    this.free.set(b.byteLength, list);
  }
}

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
  return timeoutMs > 0 ? Math.min(MAX_BEAT_MS, Math.max(20, Math.round(timeoutMs / 8))) : MAX_BEAT_MS;
}
const MAX_BEAT_MS = 1000;
/** A right neighbour silent this many heartbeat intervals is named as the stalled rank. */
const SILENT_BEATS = 4;
/** A rank with no such evidence waits this many intervals past its timeout for the verdict. */
const GRACE_BEATS = SILENT_BEATS + 2;

/** Busy polling gives its core away once nothing has arrived for this long (see poll). */
const YIELD_AFTER_MS = 0.05;

/** How long a lost neighbour waits for an abort that names the rank really gone (see peerLost). */
const LOSS_GRACE_MS = 250;

/**
 * A communicator: this rank's place in the ring, its two links, and the sequencing of collectives.
 *
 * Every collective gets the next sequence number; all ranks must call collectives in the same
 * order. Before its data, each rank sends its operation descriptor to the right, and every rank
 * forwards descriptors it receives, so after N-1 hops every rank knows every rank's descriptor.
 * Data from the left is applied only once the left's descriptor matched ours (a disagreeing rank
 * can never make us read its bytes as ours), and an operation completes only once all N
 * descriptors agree — so a mismatch becomes the same typed error on every rank, and the table's
 * arrival doubles as proof that every rank reached the operation (which makes barrier free).
 *
 * Failures that leave the ring unusable (a lost peer, a timeout, a protocol violation) are fatal:
 * every pending operation rejects, an 'abort' travels both ways around the ring so that every rank
 * fails fast with the original cause, and every later call rejects with the same error.
 *
 * An operation that outlives `timeoutMs` fails on every rank naming the stalled rank where one can
 * be seen (see beatInterval): the rank left of it fails at once with "rank X has sent nothing for
 * N ms", every other rank gives that verdict up to GRACE_BEATS intervals to arrive before failing
 * with its own view (which ranks have not reached the operation, or whom it waits for).
 *
 * Nothing here touches process state or globals, so the communicator can live in a worker thread.
 */
export class Communicator {
  readonly left: number;
  readonly right: number;
  private nextSeq = 0;
  private readonly ops = new Map<number, OpState>();
  private broken: RingError | undefined;
  private closing = false;
  private readonly queue: QueuedSend[] = [];
  private inflight = 0;
  private active = 0;
  private readonly byes = new Set<number>();
  private lastProgress = 0;
  private polling = false;
  /** Held frames that keep their shared-memory slot (see onData), and bytes held as copies. */
  private pinned = 0;
  private earlyCopied = 0;

  /** Bytes of frames that arrived before they could be applied and were copied (diagnostics, tests). */
  get earlyCopiedBytes(): number {
    return this.earlyCopied;
  }
  private readonly framePool = new FramePool();
  /** A lost neighbour waiting out LOSS_GRACE_MS for an abort that explains it (see peerLost). */
  private lossPending: NodeJS.Timeout | undefined;
  private readonly beatMs: number;
  private beat: NodeJS.Timeout | undefined;
  /** When the right neighbour last sent anything (heartbeats included), and its heartbeat interval. */
  private lastFromRight = Date.now();
  private rightBeatMs: number;

  constructor(
    readonly rank: number,
    readonly size: number,
    private readonly leftLink: Link | undefined,
    private readonly rightLink: Link | undefined,
    private readonly options: CommunicatorOptions,
  ) {
    this.left = mod(rank - 1, size);
    this.right = mod(rank + 1, size);
    if (size > 1 && (!leftLink || !rightLink)) throw new RingInternalError('a ring of more than one rank needs two links');
    leftLink?.setHandlers({
      data: (h, p, pin) => this.onData(h, p, pin),
      control: (m) => this.onControl(m, 'left'),
      closed: (e) => this.onClosed(this.left, 'left', e),
    });
    rightLink?.setHandlers({
      data: () => this.fatal(this.protocolError(this.right, 'sent data against the ring direction')),
      control: (m) => this.onControl(m, 'right'),
      closed: (e) => this.onClosed(this.right, 'right', e),
    });
    leftLink?.unref();
    rightLink?.unref();
    this.beatMs = this.rightBeatMs = size > 1 ? beatInterval(options.timeoutMs) : 0;
    if (size > 1) {
      const beat = () => leftLink!.sendControl({ t: 'beat', rank: this.rank, everyMs: this.beatMs });
      beat();
      this.beat = setInterval(beat, this.beatMs);
      this.beat.unref();
    }
  }

  /** Bytes per data frame; every rank has the same (checked at rendezvous). */
  get chunkBytes(): number {
    return this.options.chunkBytes;
  }

  /** The fatal error this communicator failed with, if any. */
  get error(): RingError | undefined {
    return this.broken;
  }

  /** Runs one collective; all ranks must call run() for the same operations in the same order. */
  run<T>(desc: OpDescriptor, coll: Collective<T>): Promise<T> {
    const seq = this.nextSeq++;
    if (this.broken) return Promise.reject(this.broken);
    if (this.closing) return Promise.reject(new RingShutdownError(`rank ${this.rank}: ${desc.kind} called after shutdown()`));
    if (this.byes.size > 0) {
      const gone = [...this.byes].sort((a, b) => a - b);
      return Promise.reject(
        new RingShutdownError(`rank ${this.rank}: ${label(desc, seq)} cannot run: rank ${gone.join(', ')} has already called shutdown()`, {
          rank: this.rank,
          ranks: gone,
          op: desc.kind,
          seq,
        }),
      );
    }
    const st = this.state(seq);
    this.unpinLater(seq);
    st.desc = desc;
    st.descs[this.rank] = desc;
    st.descCount++;
    st.coll = coll as Collective<unknown>;
    // A frame carries chunkBytes on the wire (see wireBytesPerElement).
    const wireBytes = wireBytesPerElement(desc.compression, dtypeByCode(desc.dtype)?.bytes ?? 1);
    const chunkElems = desc.dtype ? Math.max(1, Math.floor(this.options.chunkBytes / wireBytes)) : 1;
    st.ctx = {
      rank: this.rank,
      size: this.size,
      left: this.left,
      right: this.right,
      chunkElems,
      descriptors: st.descs,
      inline: st.inline,
      send: (step, chunk, payload, codec = 0, scale = 1) => this.enqueue(st, { seq, step, chunk, codec, scale }, payload),
      sendFilled: (step, chunk, bytes, codec, fill) => this.enqueue(st, { seq, step, chunk, codec, scale: 1 }, { bytes, fill }),
    };
    const done = new Promise<T>((resolve, reject) => {
      st.resolve = resolve as (v: unknown) => void;
      st.reject = reject;
    });
    if (this.active++ === 0) this.setRef(true);
    this.progress();
    if (this.options.timeoutMs > 0) {
      st.deadline = Date.now() + this.options.timeoutMs;
      if (!this.deadlines) this.armDeadlines(this.options.timeoutMs);
    }
    const p = coll.inline?.();
    st.inline[this.rank] = p;
    if (this.size > 1) this.sendTracked(st, p ? { t: 'desc', seq, origin: this.rank, d: desc, p } : { t: 'desc', seq, origin: this.rank, d: desc });
    coll.start(st.ctx);
    this.check(st);
    return done;
  }

  private state(seq: number): OpState {
    let st = this.ops.get(seq);
    if (!st) {
      st = {
        seq,
        descs: new Array(this.size).fill(undefined),
        inline: new Array(this.size).fill(undefined),
        descCount: 0,
        leftChecked: false,
        leftMismatch: false,
        tableChecked: false,
        held: [],
        pendingSends: 0,
        deadline: 0,
      };
      this.ops.set(seq, st);
    }
    return st;
  }

  /** Operations that finished (or failed) here: later frames for them are dropped. */
  private isPast(seq: number): boolean {
    return seq < this.nextSeq && !this.ops.has(seq);
  }

  private onControl(m: LinkControlMessage, from: 'left' | 'right'): void {
    if (from === 'right') this.lastFromRight = Date.now();
    if (m.t === 'beat') {
      if (from === 'right') this.rightBeatMs = Math.min(m.everyMs, MAX_BEAT_MS);
      return;
    }
    this.progress();
    if (m.t === 'desc') {
      const sender = from === 'left' ? this.left : this.right;
      let d: OpDescriptor;
      try {
        // The link checked only the message's envelope; what a descriptor may hold is checked here.
        d = validateDescriptor(m.d, `rank ${sender} (${from} neighbour)`);
      } catch (e) {
        // As a link that failed on it would have been: ignored once shutting down.
        if (this.closing) return;
        return this.fatal(this.protocolError(sender, `(${from} neighbour) broke the protocol: ${(e as Error).message}`));
      }
      // Only the known fields travel further.
      m.d = d;
      if (from !== 'left') return this.fatal(this.protocolError(this.right, 'sent a descriptor against the ring direction'));
      if (m.origin < 0 || m.origin >= this.size || m.origin === this.rank) {
        return this.fatal(this.protocolError(this.left, `forwarded a descriptor with origin ${m.origin}`));
      }
      if (m.seq >= this.nextSeq + 1024) {
        return this.fatal(this.protocolError(this.left, `sent a descriptor for #${m.seq}, far ahead of this rank's #${this.nextSeq}`));
      }
      // Forward first: the other ranks need every descriptor even if this rank has failed the op.
      const past = this.isPast(m.seq) || this.broken !== undefined;
      // But not a duplicate: the next rank would blame this one for it.
      if (!past && this.ops.get(m.seq)?.descs[m.origin]) {
        return this.fatal(this.protocolError(this.left, `sent rank ${m.origin}'s descriptor for #${m.seq} twice`));
      }
      if (m.origin !== this.right) {
        if (past) this.rightLink?.sendControl(m);
        else this.sendTracked(this.state(m.seq), m);
      }
      if (past) return;
      const st = this.state(m.seq);
      st.descs[m.origin] = d;
      st.inline[m.origin] = m.p;
      st.descCount++;
      this.check(st);
    } else if (m.t === 'abort') {
      if (this.broken) return;
      if (m.origin >= this.size) {
        return this.fatal(this.protocolError(from === 'left' ? this.left : this.right, `sent an abort from rank ${m.origin}, outside the ring`));
      }
      const cause = deserializeError(m.error);
      const e = new (cause.constructor as new (msg: string, d: object) => RingError)(
        `rank ${this.rank}: aborted because rank ${m.origin} failed: ${m.error.message}`,
        { ...m.error.details, rank: this.rank },
      );
      // Pass it on away from where it came from, then fail here.
      (from === 'left' ? this.rightLink : this.leftLink)?.sendControl(m);
      this.fail(e);
    } else if (m.t === 'bye') {
      // Byes are not forwarded: the sender is the neighbour itself.
      const peer = from === 'left' ? this.left : this.right;
      if (m.rank !== peer) return this.fatal(this.protocolError(peer, `said goodbye as rank ${m.rank}`));
      this.byes.add(m.rank);
    }
  }

  private onData(h: DataHeader, payload: Uint8Array, pin?: () => () => void): void {
    this.progress();
    if (this.broken || this.isPast(h.seq)) return;
    if (h.seq >= this.nextSeq + 1024) {
      return this.fatal(this.protocolError(this.left, `sent data for #${h.seq}, far ahead of this rank's #${this.nextSeq}`));
    }
    const st = this.state(h.seq);
    // The left sends its descriptor before any data of an operation, on the same ordered link.
    if (!st.descs[this.left]) {
      return this.fatal(this.protocolError(this.left, `sent data for #${h.seq} before its descriptor`));
    }
    // Failed here already (e.g. a mismatch elsewhere in the ring): its data is not wanted.
    if (st.leftMismatch || (st.desc && !st.resolve)) return;
    if (!st.coll || !st.leftChecked || (st.coll.needsTable && !st.tableChecked)) {
      // A payload is only lent for the call. A frame in a shared-memory slot can keep its slot
      // instead of being copied (a rank that starts late would otherwise copy as much as the left
      // sends meanwhile: measured up to 48 MiB of a 64 MiB all-reduce at N=4): the left then waits
      // for slots, which bounds what arrives early. But only where that wait cannot block this
      // rank: for an operation already running here (its frames are held for descriptors, which
      // never wait for slots), or when every operation running here has all it needs from the
      // left (true whenever the left sends operations one after the other: its frames arrive in
      // order). A left that runs operations concurrently may still owe frames of an earlier one,
      // queued behind these: those get copies. See also unpinLater().
      if (pin && (st.coll !== undefined || this.leftDoneWithRunning())) {
        st.held.push([h, payload, pin()]);
        this.pinned++;
      } else {
        st.held.push([h, new Uint8Array(payload), undefined]);
        this.earlyCopied += payload.byteLength;
      }
      return;
    }
    this.apply(st, h, payload);
    this.maybeComplete(st);
  }

  private apply(st: OpState, h: DataHeader, payload: Uint8Array): void {
    const problem = st.coll!.onData(st.ctx!, h, payload);
    if (problem) this.fatal(this.protocolError(this.left, `sent an unexpected frame for ${label(st.desc!, st.seq)}: ${problem}`));
  }

  /** Advances an operation through its agreement checks as descriptors arrive. */
  private check(st: OpState): void {
    if (!st.desc || this.broken) return;
    if (!st.leftChecked && !st.leftMismatch && st.descs[this.left]) {
      if (firstDifference(st.desc, st.descs[this.left]!) === undefined) st.leftChecked = true;
      else {
        // Never apply its bytes; the full table (which still arrives) names the difference.
        st.leftMismatch = true;
        this.dropHeld(st);
      }
    }
    if (!st.tableChecked && st.descCount === this.size) {
      const mismatch = st.descs.every((d) => sameDescriptor(d!, st.desc!)) ? undefined : mismatchError(st.descs as OpDescriptor[], this.rank, st.desc, st.seq);
      if (mismatch) return this.settle(st, mismatch);
      st.tableChecked = true;
      const bad = st.coll!.onTable?.(st.ctx!);
      if (bad) return this.fatal(this.protocolError(bad.rank, `${bad.problem} (${label(st.desc!, st.seq)})`));
    }
    if (st.held.length > 0 && st.leftChecked && (!st.coll!.needsTable || st.tableChecked)) {
      const held = st.held;
      st.held = [];
      for (const [h, p, release] of held) {
        if (!this.broken) this.apply(st, h, p);
        if (release) this.unpin(release);
      }
      if (this.broken) return;
    }
    this.maybeComplete(st);
  }

  private maybeComplete(st: OpState): void {
    if (st.resolve && st.tableChecked && st.coll!.received && st.pendingSends === 0 && !this.broken) {
      this.settle(st, undefined);
    }
  }

  /** Every operation running here has received all its frames from the left. */
  private leftDoneWithRunning(): boolean {
    if (this.active === 0) return true;
    for (const o of this.ops.values()) {
      if (o.resolve && o.coll && !(o.tableChecked && o.coll.received)) return false;
    }
    return true;
  }

  /** Hands back the slots of an operation's held frames and forgets them. */
  private dropHeld(st: OpState): void {
    for (const [, , release] of st.held) if (release) this.unpin(release);
    st.held = [];
  }

  private unpin(release: () => void): void {
    this.pinned--;
    release();
  }

  /**
   * An operation starts: frames of LATER operations must not keep slots now, because this one may
   * need the same left neighbour's next frames, which could be waiting for those very slots (if
   * the left runs ahead and the caller here waits for this operation before starting the next).
   */
  private unpinLater(seq: number): void {
    if (this.pinned === 0) return;
    for (const st of this.ops.values()) {
      if (st.seq <= seq) continue;
      st.held = st.held.map(([h, p, release]) => {
        if (!release) return [h, p, undefined];
        const copy = new Uint8Array(p);
        this.earlyCopied += p.byteLength;
        this.unpin(release);
        return [h, copy, undefined];
      });
    }
  }

  /** Finishes an operation here, with its result or an error that concerns it alone. */
  private settle(st: OpState, error: Error | undefined): void {
    const { resolve, reject, coll } = st;
    if (!resolve) return;
    this.dropHeld(st);
    st.resolve = st.reject = undefined;
    clearTimeout(st.timer);
    if (st.pendingSends === 0) this.ops.delete(st.seq);
    if (--this.active === 0) this.setRef(false);
    if (error) reject!(error);
    else resolve(coll!.result());
  }

  /**
   * A descriptor (ours or forwarded) counts as a pending send of its operation: the operation
   * resolves only once it has left the process. Otherwise a caller that blocks right after the
   * promise resolves (tfjs' synchronous applyGradients in Atomics.wait) could leave it unsent in a
   * corked socket — and its neighbours waiting for it forever.
   */
  private sendTracked(st: OpState, msg: LinkControlMessage): void {
    if (this.rightDone) return;
    st.pendingSends++;
    this.rightLink!.sendControl(msg, (err) => {
      if (err && !this.rightDone) return this.sendFailed(err);
      this.sent(st);
      this.maybeComplete(st);
    });
  }

  private enqueue(st: OpState, header: DataHeader, payload: QueuedSend['payload']): void {
    if (this.rightDone) return;
    st.pendingSends++;
    this.queue.push({ st, header, payload });
    this.pump();
  }

  /** Keeps up to maxInflight frames on the wire; each flush lets the next one go. */
  private pump(): void {
    while (this.inflight < this.options.maxInflight && this.queue.length > 0 && !this.broken) {
      const { st, header, payload } = this.queue.shift()!;
      if (!st.resolve && st.desc) {
        // The operation failed here (e.g. a mismatch): its frames are no longer wanted.
        this.sent(st);
        continue;
      }
      this.inflight++;
      const done = (err?: Error) => {
        this.inflight--;
        if (err && !this.rightDone) return this.sendFailed(err);
        this.sent(st);
        this.maybeComplete(st);
        this.pump();
      };
      const link = this.rightLink!;
      const giveBack = (buf: Uint8Array) => (err?: Error) => {
        this.framePool.give(buf, 2 * this.options.maxInflight);
        done(err);
      };
      if (payload instanceof Uint8Array) link.sendData(header, payload, done);
      else if (!link.sendFilled?.(header, payload.bytes, payload.fill, done)) {
        const buf = this.framePool.take(payload.bytes);
        link.sendData({ ...header, scale: payload.fill(buf) }, buf, giveBack(buf));
      }
    }
  }

  private sendFailed(err: Error): void {
    // After its goodbye the right neighbour closes: a failed write to it is expected (see rightLeft).
    if (this.byes.has(this.right)) return;
    this.peerLost(this.right, 'right', `cannot be reached (${err.message})`);
  }

  /**
   * The right neighbour said goodbye and closed its link. It calls shutdown() only once its
   * operations are done, so it needs nothing more from this rank: sends to it (queued, or still
   * waiting for their write callbacks) count as delivered, and later ones are dropped. Operations
   * here may still be receiving from the left — a rank finishes an all-gather as soon as it has
   * what it passes on, before its left neighbour has its last frames — and go on.
   */
  private rightDone = false;
  private rightLeft(): void {
    this.rightDone = true;
    const queued = this.queue.splice(0);
    for (const q of queued) this.sent(q.st);
    for (const st of [...this.ops.values()]) {
      if (st.resolve) this.maybeComplete(st);
    }
  }

  private sent(st: OpState): void {
    if (--st.pendingSends === 0 && !st.resolve && st.desc) this.ops.delete(st.seq);
  }

  private onClosed(peer: number, side: 'left' | 'right', error: Error | undefined): void {
    if (this.closing || this.broken) return;
    // The link dropped a peer that sent something undecodable: that is the peer's protocol error.
    if (error instanceof RingProtocolError) return this.fatal(this.protocolError(peer, `(${side} neighbour) broke the protocol: ${error.message}`));
    if (this.byes.has(peer)) {
      // A neighbour that said goodbye finished every operation it ran; see rightLeft(). Gone on the
      // left, it has sent all it ever will (its messages all came before its close): what is
      // still pending here for want of its data never completes.
      if (side === 'right') return this.rightLeft();
      const starved = [...this.ops.values()].some((s) => s.resolve && !(s.tableChecked && s.coll!.received));
      if (!starved) return;
    }
    const how = this.byes.has(peer) ? 'called shutdown()' : `is gone (${error?.message ?? 'connection closed'})`;
    // Idle, this is how a job ends whose ranks exit without shutdown(): the next call (if any) raises it.
    this.peerLost(peer, side, how, { quietIfIdle: true });
  }

  /** The ring is broken at `peer`: fails everything, naming it and the first pending operation. */
  private peerLost(peer: number, side: 'left' | 'right', how: string, opts: { quietIfIdle?: boolean } = {}, graced = false): void {
    if (this.closing || this.broken || this.lossPending) return;
    const pending = [...this.ops.values()].filter((s) => s.resolve);
    if (!graced && pending.length > 0 && this.size > 2) {
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
    this.fatal(
      new RingPeerLostError(`rank ${this.rank}: rank ${peer} (${side} neighbour) ${how}${during}`, {
        rank: this.rank,
        ranks: [peer],
        op: pending[0]?.desc!.kind,
        seq: pending[0]?.seq,
      }),
      opts,
    );
  }

  private protocolError(peer: number, what: string): RingProtocolError {
    return new RingProtocolError(`rank ${this.rank}: protocol error: rank ${peer} ${what}`, { rank: this.rank, ranks: [peer] });
  }

  /**
   * `st` has run out of time (at `expiry`). With a silent right neighbour this rank names it now;
   * otherwise it checks again every heartbeat, for up to GRACE_BEATS of them, so that the verdict
   * of the rank next to a stalled one (an abort) can arrive first.
   */
  /**
   * One timer watches every pending operation's deadline (a timer per operation measured ~2 us of
   * a 4-byte all-reduce): armed for the earliest, it re-arms itself for the next when it fires.
   */
  private deadlines: NodeJS.Timeout | undefined;
  private armDeadlines(ms: number): void {
    this.deadlines = setTimeout(this.checkDeadlines, Math.max(1, ms));
    this.deadlines.unref();
  }
  private readonly checkDeadlines = (): void => {
    this.deadlines = undefined;
    if (this.broken) return;
    const now = Date.now();
    let next = Infinity;
    for (const st of this.ops.values()) {
      if (!st.resolve || st.deadline === 0) continue;
      if (st.deadline <= now) {
        const expiry = st.deadline;
        st.deadline = 0;
        this.onTimeout(st, expiry);
      } else next = Math.min(next, st.deadline);
    }
    if (next !== Infinity) this.armDeadlines(next - now);
  };

  private onTimeout(st: OpState, expiry: number): void {
    // After setImmediate, input that queued up while this process was busy (heartbeats) has been read.
    setImmediate(() => {
      if (!st.resolve || this.broken) return;
      const now = Date.now();
      const silent = now - this.lastFromRight;
      const stalledRight = this.size > 1 && silent >= SILENT_BEATS * Math.max(this.beatMs, this.rightBeatMs);
      if (stalledRight || now - expiry >= GRACE_BEATS * this.beatMs) {
        this.fatal(this.timeoutError(st, stalledRight ? silent : undefined));
      } else {
        st.timer = setTimeout(() => this.onTimeout(st, expiry), this.beatMs);
      }
    });
  }

  private timeoutError(st: OpState, rightSilentMs?: number): RingTimeoutError {
    const d = st.desc!;
    const missing = st.descs.map((x, r) => (x ? -1 : r)).filter((r) => r >= 0);
    if (rightSilentMs !== undefined) {
      return new RingTimeoutError(
        `rank ${this.rank}: ${label(d, st.seq)} timed out after ${this.options.timeoutMs} ms: rank ${this.right} (right neighbour) ` +
          `has sent nothing for ${rightSilentMs} ms (stopped, its event loop blocked, or the network to it down)`,
        { rank: this.rank, ranks: [this.right], op: d.kind, seq: st.seq },
      );
    }
    const waiting = missing.length
      ? `ranks ${missing.join(', ')} have not reached it`
      : !st.coll!.received
        ? `still waiting for data from rank ${this.left} (left neighbour)`
        : `still waiting for rank ${this.right} (right neighbour) to take ${st.pendingSends} frame(s)`;
    return new RingTimeoutError(
      `rank ${this.rank}: ${label(d, st.seq)} timed out after ${this.options.timeoutMs} ms: ${waiting}`,
      { rank: this.rank, ranks: missing.length ? missing : [this.left], op: d.kind, seq: st.seq },
    );
  }

  /** A failure that leaves the ring unusable: tell the neighbours, fail everything, close. */
  private fatal(e: RingError, opts: { quietIfIdle?: boolean } = {}): void {
    if (this.broken) return;
    const msg = { t: 'abort' as const, origin: this.rank, error: serializeError(e) };
    this.leftLink?.sendControl(msg);
    this.rightLink?.sendControl(msg);
    const idle = this.active === 0;
    this.fail(e);
    if (!(idle && opts.quietIfIdle)) this.options.logger.warn(e.message);
  }

  private fail(e: RingError): void {
    this.broken = e;
    clearTimeout(this.lossPending);
    this.lossPending = undefined;
    clearInterval(this.beat);
    clearTimeout(this.deadlines);
    for (const st of [...this.ops.values()]) {
      if (st.resolve) this.settle(st, e);
    }
    this.ops.clear();
    this.queue.length = 0;
    this.leftLink?.close();
    this.rightLink?.close();
  }

  /**
   * Busy polling. A process that sleeps in epoll_wait pays for its wake-up when the neighbour's
   * bytes arrive (measured here: a 4-byte ws round trip is 184 us median when both sides sleep,
   * 43 us when they keep polling). So while an operation is pending and messages keep coming, the
   * loop re-arms itself with setImmediate, which makes libuv poll without blocking. It stops when
   * nothing is pending or nothing has arrived for busyPollUs, so an idle or stuck rank sleeps.
   */
  private progress(): void {
    const limit = this.options.busyPollUs ?? 0;
    if (limit <= 0 || this.active === 0) return;
    this.lastProgress = performance.now();
    if (this.polling) return;
    this.polling = true;
    this.leftLink?.setPolling?.(true);
    this.rightLink?.setPolling?.(true);
    setImmediate(this.poll);
  }

  private readonly poll = (): void => {
    if (this.active === 0 || this.broken || performance.now() - this.lastProgress > (this.options.busyPollUs ?? 0) / 1000) {
      this.polling = false;
      // Going to sleep: the neighbours must wake this process through the socket again. (A last
      // look at the mailboxes may deliver something, which starts polling anew.)
      this.leftLink?.setPolling?.(false);
      this.rightLink?.setPolling?.(false);
      if (this.polling) {
        this.leftLink?.setPolling?.(true);
        this.rightLink?.setPolling?.(true);
      }
      return;
    }
    this.leftLink?.poll?.();
    this.rightLink?.poll?.();
    // A neighbour that is late may not have a core (a busy machine): from then on give ours away
    // on every turn if another thread wants it (sched_yield), instead of holding it for whole
    // time slices while the rank we wait for cannot run. Not at once: yielding on every turn
    // measured slower on an idle machine (a 4-byte all-reduce 150-170 us instead of 75-90).
    if (performance.now() - this.lastProgress > YIELD_AFTER_MS) schedYield?.();
    setImmediate(this.poll);
  };

  private setRef(on: boolean): void {
    for (const l of [this.leftLink, this.rightLink]) if (on) l?.ref();
    else l?.unref();
  }

  /** Says goodbye to both neighbours and closes the links. Pending operations reject. */
  async shutdown(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.beat);
    clearTimeout(this.deadlines);
    const err = new RingShutdownError(`rank ${this.rank}: shutdown() called while the operation was pending`);
    for (const st of [...this.ops.values()]) if (st.resolve) this.settle(st, err);
    if (!this.broken && this.size > 1) {
      await Promise.all(
        [this.leftLink!, this.rightLink!].map(
          (l) => new Promise<void>((res) => l.sendControl({ t: 'bye', rank: this.rank }, () => res())),
        ),
      );
    }
    this.leftLink?.close();
    this.rightLink?.close();
  }
}
