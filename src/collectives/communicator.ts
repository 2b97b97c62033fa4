import { RingError, RingInternalError, RingInvalidArgError, RingProtocolError, RingShutdownError, serializeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Link } from '../transport/link.js';
import type { DescMsg, LinkControlMessage } from '../transport/messages.js';
import type { DataHeader } from '../transport/wire.js';
import type { Collective } from './collective.js';
import { label, type OpDescriptor } from './descriptor.js';
import { mod } from './schedule.js';
import { BusyPoller } from '../transport/busy-poll.js';
import { checkDescriptorMessage, SEQ_WINDOW, type Via } from './comm/agreement.js';
import { opContext, type ContextHost } from './comm/context.js';
import { DirectRoute, type DirectLinks } from './comm/direct-route.js';
import { abortError, Liveness } from './comm/liveness.js';
import { heldBound, OpTable, type OpState } from './comm/op-table.js';
import { SendQueue } from './comm/send-queue.js';
import { EarlyFlow, EARLY_BYTES } from './comm/early-flow.js';

export { beatInterval } from './comm/liveness.js';
export { EARLY_BYTES } from './comm/early-flow.js';

export interface CommunicatorOptions {
  /** Bytes per data frame (the pipeline's unit). */
  chunkBytes: number;
  /** Data frames on the wire per link before further sends wait for earlier ones to flush. */
  maxInflight: number;
  /** Per-operation timeout in ms; 0 disables it. */
  timeoutMs: number;
  /**
   * While an operation is pending, keep the event loop polling (no sleep) for up to this many
   * microseconds after the last message arrived; 0 = never. See comm/busy-poll.ts.
   */
  busyPollUs?: number;
  /** Stop polling for a while when the thread waits for a CPU while polling (default false). See busy-poll.ts. */
  busyPollBackoff?: boolean;
  /**
   * Warn (once per operation, through `logger`) when an operation has waited this long, naming
   * the ranks that have not reached it and the last operation each was seen in; 0 or absent = never.
   */
  stallWarningMs?: number;
  /** Bytes of frames held for operations not started here (see comm/early-flow.ts); default EARLY_BYTES. */
  earlyBytes?: number;
  logger: Logger;
}

/**
 * A communicator: this rank's place in the ring, its two links, and the sequencing of collectives.
 *
 * Every collective gets the next sequence number; all ranks must call collectives in the same
 * order. Before its data, each rank sends its operation descriptor to the right, and every rank
 * forwards descriptors it receives, so after N-1 hops every rank knows every rank's descriptor
 * (comm/agreement.ts says what is checked when).
 *
 * Failures that leave the ring unusable (a lost peer, a timeout, a protocol violation) are fatal:
 * every pending operation rejects, an 'abort' travels both ways around the ring so that every rank
 * fails fast with the original cause, and every later call rejects with the same error.
 *
 * Assembled from parts, each in comm/: the operations known here and their held frames
 * (op-table.ts), each operation's descriptor table (agreement.ts), what a running collective is
 * given (context.ts), the sends to the right (send-queue.ts), heartbeats, deadlines, goodbyes and
 * lost peers (liveness.ts), the direct route of small operations (direct-route.ts), and busy
 * polling (transport/busy-poll.ts). This class routes messages between them and settles operations.
 *
 * Nothing here touches process state or globals, so the communicator can live in a worker thread.
 */
export class Communicator {
  readonly left: number;
  readonly right: number;
  private readonly ops: OpTable;
  private readonly sends: SendQueue;
  private readonly liveness: Liveness;
  private readonly poller: BusyPoller;
  private readonly earlyFlow: EarlyFlow;
  /** Small operations' route straight to other ranks (comm/direct-route.ts), where it is used. */
  private readonly direct: DirectRoute | undefined;
  /** What the parts call back here (see the constructor); operations' contexts too (comm/context.ts). */
  private readonly host: ContextHost;
  private broken: RingError | undefined;
  private closing = false;

  constructor(
    readonly rank: number,
    readonly size: number,
    private readonly leftLink: Link | undefined,
    private readonly rightLink: Link | undefined,
    private readonly options: CommunicatorOptions,
    /** Links for the direct route of small operations, and its radix; absent: the ring only. */
    direct?: { links: DirectLinks; radix: number },
  ) {
    this.left = mod(rank - 1, size);
    this.right = mod(rank + 1, size);
    if (size > 1 && (!leftLink || !rightLink)) throw new RingInternalError('a ring of more than one rank needs two links');
    this.ops = new OpTable(size);
    this.sends = new SendQueue(rightLink, options.maxInflight, this.ops, (st) => this.maybeComplete(st), (err) => this.liveness.writeFailed(err));
    this.poller = new BusyPoller(
      (f) => {
        if (leftLink) f(leftLink);
        if (rightLink) f(rightLink);
        this.direct?.each(f);
      },
      options,
      () => this.ops.active,
    );
    // What the parts (comm/) call back here.
    const host = {
      rank,
      size,
      left: this.left,
      right: this.right,
      broken: () => this.broken !== undefined,
      closing: () => this.closing,
      fatal: (e: RingError, opts?: { quietIfIdle?: boolean }) => this.fatal(e, opts),
      protocol: (peer: number, what: string) => this.fatal(this.protocolError(peer, what)),
      rightLeft: () => this.rightLeft(),
      settle: (st: OpState, e: RingError) => this.settle(st, e),
      maybeComplete: (st: OpState) => this.maybeComplete(st),
      accept: (st: OpState, origin: number, d: OpDescriptor, p: Uint8Array | undefined, via: Via, sender: number) => this.accept(st, origin, d, p, via, sender),
      sendOwn: (st: OpState) => this.sendOwn(st),
      guard: this.guard,
    };
    this.host = host;
    this.earlyFlow = new EarlyFlow(leftLink, this.ops, options.earlyBytes ?? EARLY_BYTES, (what) => this.fatal(this.protocolError(this.left, what)));
    this.liveness = new Liveness(host, options.timeoutMs, this.ops, options.stallWarningMs ?? 0, (m) => options.logger.warn(m));
    const guard = this.guard;
    leftLink?.setHandlers({
      data: guard(this.left, (h: DataHeader, p: Uint8Array, pin?: () => () => void) => this.onData(h, p, pin)),
      control: guard(this.left, (m: LinkControlMessage) => this.onControl(m, 'left')),
      closed: (e) => this.liveness.linkClosed(this.left, 'left', e),
    });
    rightLink?.setHandlers({
      data: () => this.fatal(this.protocolError(this.right, 'sent data against the ring direction')),
      control: guard(this.right, (m: LinkControlMessage) => this.onControl(m, 'right')),
      closed: (e) => this.liveness.linkClosed(this.right, 'right', e),
    });
    leftLink?.unref();
    rightLink?.unref();
    this.liveness.start(leftLink);
    this.direct = direct && size > 1 ? new DirectRoute(host, { ops: this.ops, liveness: this.liveness, poller: this.poller }, direct.links, direct.radix) : undefined;
  }

  /** Every handler runs under try/catch: see handlerFailed. */
  private readonly guard =
    <A extends unknown[]>(peer: number, f: (...a: A) => void) =>
    (...a: A) => {
      try {
        f(...a);
      } catch (e) {
        this.handlerFailed(peer, e);
      }
    };

  /** Bytes per data frame; every rank has the same (checked at rendezvous). */
  get chunkBytes(): number {
    return this.options.chunkBytes;
  }

  /** The fatal error this communicator failed with, if any. */
  get error(): RingError | undefined {
    return this.broken;
  }

  /** The ranks whose descriptor of operation `seq` has not arrived here (e.g. for a start-up error). */
  notReached(seq: number): number[] {
    return this.ops.get(seq)?.table.missing() ?? [];
  }

  /** Bytes of frames that arrived before they could be applied and were copied (diagnostics, tests). */
  get earlyCopiedBytes(): number {
    return this.ops.earlyCopied;
  }

  /** Descriptors this rank has sent on direct links (diagnostics, tests); undefined without a direct route. */
  get directSent(): number | undefined {
    return this.direct?.sent;
  }

  /** Bytes held now for operations not started here, and how often reading from the left paused (diagnostics, tests). */
  get early(): { heldBytes: number; pauses: number; paused: boolean } {
    return { heldBytes: this.ops.earlyBytes, pauses: this.earlyFlow.pauses, paused: this.earlyFlow.paused };
  }

  /** Runs one collective; all ranks must call run() for the same operations in the same order. */
  run<T>(desc: OpDescriptor, coll: Collective<T>): Promise<T> {
    const seq = this.ops.nextSeq++;
    if (this.broken) return Promise.reject(this.broken);
    if (this.closing) return Promise.reject(new RingShutdownError(`rank ${this.rank}: ${desc.kind} called after shutdown()`));
    const refused = this.liveness.refusal(desc, seq);
    if (refused) return Promise.reject(refused);
    const st = this.ops.state(seq);
    this.ops.unpinLater(seq);
    st.desc = desc;
    st.coll = coll as Collective<unknown>;
    this.ops.started(st);
    st.ctx = opContext(this, st, desc, this.options.chunkBytes, this.sends, this.host);
    const done = new Promise<T>((resolve, reject) => {
      st.resolve = resolve as (v: unknown) => void;
      st.reject = reject;
    });
    if (this.ops.active++ === 0) this.setRef(true);
    this.poller.progress();
    this.liveness.watch(st);
    const p = coll.inline?.();
    st.table.add(this.rank, desc, p);
    if (this.direct && coll.frameless) this.direct.start(st);
    else if (this.size > 1) this.sendOwn(st);
    coll.start(st.ctx);
    this.check(st);
    // It needs the left's frames: reading from the left goes on (see EarlyFlow).
    this.flow();
    return done;
  }

  /**
   * Handling a message from `peer` threw. Whatever a peer sends is checked before it is used
   * (descriptor.ts, link.ts), so this is a bug in ringreduce: it fails the ring with a typed error
   * (and the abort tells every rank) instead of escaping into the socket's event handler, where it
   * would crash the process.
   */
  private handlerFailed(peer: number, e: unknown): void {
    if (e instanceof RingError) return this.fatal(e);
    this.fatal(new RingInternalError(`rank ${this.rank}: handling a message from rank ${peer} failed: ${(e as Error)?.message ?? String(e)}`, { rank: this.rank, ranks: [peer] }));
  }

  private onControl(m: LinkControlMessage, from: 'left' | 'right'): void {
    if (from === 'right') this.liveness.heardFromRight();
    if (m.t === 'beat') {
      const tooMany = this.liveness.beatFrom(from, m.everyMs);
      if (tooMany) this.fatal(this.protocolError(from === 'left' ? this.left : this.right, tooMany));
      return;
    }
    this.poller.progress();
    if (m.t === 'desc') this.onDescriptor(m, from);
    else if (m.t === 'abort') {
      if (this.broken) return;
      if (m.origin >= this.size) {
        return this.fatal(this.protocolError(from === 'left' ? this.left : this.right, `sent an abort from rank ${m.origin}, outside the ring`));
      }
      const e = abortError(this.rank, m);
      // Pass it on away from where it came from, then fail here.
      (from === 'left' ? this.rightLink : this.leftLink)?.sendControl(m);
      this.fail(e);
    } else if (m.t === 'bye') {
      // Byes are not forwarded: the sender is the neighbour itself.
      const peer = from === 'left' ? this.left : this.right;
      const wrong = this.liveness.bye(peer, m.rank);
      if (wrong) this.fatal(this.protocolError(peer, wrong));
    }
  }

  /** This rank's descriptor of `st`, to the right (with its inline input). */
  private sendOwn(st: OpState): void {
    const p = st.table.inline[this.rank];
    const m: DescMsg = { t: 'desc', seq: st.seq, origin: this.rank, d: st.desc! };
    if (p) m.p = p;
    this.sends.sendTracked(st, m);
  }

  /** A descriptor arrived by `via` from `sender` (checked): into the table, on to the next round, and on. */
  private accept(st: OpState, origin: number, d: OpDescriptor, p: Uint8Array | undefined, via: Via, sender: number): void {
    const differs = st.table.add(origin, d, p, via);
    if (differs) return this.fatal(this.protocolError(sender, differs));
    this.liveness.seen(origin, st.seq, d);
    this.direct?.accepted(st, d, via);
    this.check(st);
  }

  private onDescriptor(m: Extract<LinkControlMessage, { t: 'desc' }>, from: 'left' | 'right'): void {
    const sender = from === 'left' ? this.left : this.right;
    const checked = checkDescriptorMessage(m, sender, `(${from} neighbour)`, this.size, this.rank, this.ops.nextSeq);
    // A malformed one, as a link that failed on it would have been, is ignored once shutting down.
    if ('problem' in checked && checked.malformed && this.closing) return;
    if (from !== 'left') return this.fatal(this.protocolError(this.right, 'sent a descriptor against the ring direction'));
    if ('problem' in checked) return this.fatal(this.protocolError(sender, checked.problem));
    const d = checked.d;
    // Forward first: the other ranks need every descriptor even if this rank has failed the op.
    const past = this.ops.isPast(m.seq) || this.broken !== undefined;
    // But not a duplicate: the next rank would blame this one for it.
    if (!past && this.ops.get(m.seq)?.table.came(m.origin, 'ring')) {
      return this.fatal(this.protocolError(this.left, `sent rank ${m.origin}'s descriptor for #${m.seq} twice`));
    }
    if (m.origin !== this.right) {
      if (past) this.rightLink?.sendControl(m);
      else this.sends.sendTracked(this.ops.state(m.seq), m);
    }
    if (past) return;
    this.accept(this.ops.state(m.seq), m.origin, d, m.p, 'ring', this.left);
  }

  private onData(h: DataHeader, payload: Uint8Array, pin?: () => () => void): void {
    this.poller.progress();
    if (this.broken || this.ops.isPast(h.seq)) return;
    if (h.seq >= this.ops.nextSeq + SEQ_WINDOW) {
      return this.fatal(this.protocolError(this.left, `sent data for #${h.seq}, far ahead of this rank's #${this.ops.nextSeq}`));
    }
    const st = this.ops.state(h.seq);
    const table = st.table;
    // The left sends its descriptor before any data of an operation, on the same ordered link.
    if (!table.came(this.left, 'ring')) {
      return this.fatal(this.protocolError(this.left, `sent data for #${h.seq} before its descriptor`));
    }
    // Failed here already (e.g. a mismatch elsewhere in the ring): its data is not wanted.
    if (table.leftMismatch || (st.desc && !st.resolve)) return;
    if (!st.coll || !table.leftChecked || (st.coll.needsTable && !table.checked)) {
      if (this.ops.hold(st, h, payload, pin) === 0) return;
      if (!st.coll) return this.flow(true);
      // Running, and waiting for the rest of its descriptors (an all-gather places data only
      // once it knows every count): no more than those that arrived announce.
      if (st.heldCopied > heldBound(st.table.descs, this.rank)) {
        return this.fatal(this.protocolError(this.left, `sent more data for ${label(st.desc!, st.seq)} than the ranks' descriptors announce (${st.heldCopied} bytes held)`));
      }
      return;
    }
    this.apply(st, h, payload);
    this.maybeComplete(st);
  }

  /** See EarlyFlow; not once the ring has failed. */
  private flow(arrived = false): void {
    if (!this.broken) this.earlyFlow.update(arrived);
  }

  private apply(st: OpState, h: DataHeader, payload: Uint8Array): void {
    const problem = st.coll!.onData(st.ctx!, h, payload);
    if (problem) this.fatal(this.protocolError(this.left, `sent an unexpected frame for ${label(st.desc!, st.seq)}: ${problem}`));
  }

  /** Advances an operation through its agreement checks as descriptors arrive. */
  private check(st: OpState): void {
    if (!st.desc || this.broken) return;
    const table = st.table;
    // A left that disagrees: never apply its bytes; the full table (which still arrives) names the difference.
    if (table.checkLeft(st.desc, this.left)) this.ops.dropHeld(st);
    if (table.ready) {
      const mismatch = table.check(this.rank, st.desc, st.seq);
      if (mismatch) return this.settle(st, mismatch);
      let bad;
      try {
        bad = st.coll!.onTable?.(st.ctx!);
      } catch (e) {
        // A RingError is the same on every rank (each has the same table: e.g. an all-gather whose
        // result would exceed any array): this operation fails, the ring stays usable. Anything
        // else (the result cannot be allocated here) fails the ring, so the others learn it.
        if (e instanceof RingError) return this.settle(st, e);
        return this.fatal(
          new RingInvalidArgError(`rank ${this.rank}: ${label(st.desc, st.seq)}: cannot make the result here: ${(e as Error)?.message ?? String(e)}`, {
            rank: this.rank,
            op: st.desc.kind,
            seq: st.seq,
          }),
        );
      }
      if (bad) return this.fatal(this.protocolError(bad.rank, `${bad.problem} (${label(st.desc!, st.seq)})`));
    }
    if (st.held.length > 0 && table.leftChecked && (!st.coll!.needsTable || table.checked)) {
      for (const [h, p, release] of this.ops.takeHeld(st)) {
        if (!this.broken) this.apply(st, h, p);
        if (release) this.ops.unpin(release);
      }
      if (this.broken) return;
    }
    this.maybeComplete(st);
  }

  private maybeComplete(st: OpState): void {
    if (st.resolve && st.table.checked && st.coll!.received && st.pendingSends === 0 && !st.elsewhere && !this.broken) {
      this.settle(st, undefined);
    }
  }

  /** Finishes an operation here, with its result or an error that concerns it alone. */
  private settle(st: OpState, error: Error | undefined): void {
    const { resolve, reject, coll } = st;
    if (!resolve) return;
    this.ops.dropHeld(st);
    st.resolve = st.reject = undefined;
    clearTimeout(st.timer);
    if (st.pendingSends === 0) this.ops.forget(st);
    if (--this.ops.active === 0) this.setRef(false);
    if (error) reject!(error);
    else resolve(coll!.result());
    // Nothing running may need the left any more: past the budget, reading from it may pause.
    this.flow();
  }

  /**
   * The right neighbour said goodbye and closed its link: what it was sent counts as delivered
   * (see SendQueue.rightLeft). Operations here may still be receiving from the left — a rank
   * finishes an all-gather as soon as it has what it passes on, before its left neighbour has its
   * last frames — and go on.
   */
  private rightLeft(): void {
    this.sends.rightLeft();
    for (const st of [...this.ops.values()]) {
      if (st.resolve) this.maybeComplete(st);
    }
  }

  private protocolError(peer: number, what: string): RingProtocolError {
    return new RingProtocolError(`rank ${this.rank}: protocol error: rank ${peer} ${what}`, { rank: this.rank, ranks: [peer] });
  }

  /** A failure that leaves the ring unusable: tell the neighbours, fail everything, close. */
  private fatal(e: RingError, opts: { quietIfIdle?: boolean } = {}): void {
    if (this.broken) return;
    const msg = { t: 'abort' as const, origin: this.rank, error: serializeError(e) };
    this.leftLink?.sendControl(msg);
    this.rightLink?.sendControl(msg);
    const idle = this.ops.active === 0;
    this.fail(e);
    if (!(idle && opts.quietIfIdle)) this.options.logger.warn(e.message);
  }

  private fail(e: RingError): void {
    this.broken = e;
    this.liveness.stopAll();
    this.poller.stop();
    for (const st of [...this.ops.values()]) {
      if (st.resolve) this.settle(st, e);
    }
    this.ops.clear();
    this.sends.stop();
    this.leftLink?.close();
    this.rightLink?.close();
    this.direct?.close();
  }

  private setRef(on: boolean): void {
    for (const l of [this.leftLink, this.rightLink]) if (on) l?.ref();
    else l?.unref();
    this.direct?.ref(on);
  }

  /** Says goodbye to both neighbours and closes the links. Pending operations reject. */
  async shutdown(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.liveness.stop();
    const err = new RingShutdownError(`rank ${this.rank}: shutdown() called while the operation was pending`);
    for (const st of [...this.ops.values()]) if (st.resolve) this.settle(st, err);
    if (!this.broken && this.size > 1) {
      await Promise.all([
        ...[this.leftLink!, this.rightLink!].map((l) => new Promise<void>((res) => l.sendControl({ t: 'bye', rank: this.rank }, () => res()))),
        this.direct?.bye(),
      ]);
    }
    this.leftLink?.close();
    this.rightLink?.close();
    this.direct?.close();
  }
}
