import { dtypeByCode } from '../../dtypes.js';
import type { DataHeader } from '../../transport/wire.js';
import type { Collective, OpContext } from '../collective.js';
import type { OpDescriptor } from '../descriptor.js';
import { DescriptorTable } from './agreement.js';

/** One collective in progress (or, for a future sequence number, what arrived for it early). */
export interface OpState {
  seq: number;
  desc?: OpDescriptor;
  coll?: Collective<unknown>;
  ctx?: OpContext;
  table: DescriptorTable;
  /**
   * Frames from the left that arrived before they could be applied: a copy, or the frame's own
   * shared-memory slot kept until then (with the function that hands it back).
   */
  held: Array<[DataHeader, Uint8Array, (() => void) | undefined]>;
  /** Bytes of the held frames that are copies (the others keep their slot). */
  heldCopied: number;
  pendingSends: number;
  /** When it times out (ms since epoch; 0 = never), and the timer of its grace period, if in one. */
  deadline: number;
  timer?: NodeJS.Timeout;
  /** When it started here, and whether the stall warning has been given (see Liveness). */
  started?: number;
  stallWarned?: boolean;
  resolve?: (v: unknown) => void;
  reject?: (e: Error) => void;
  /** Its collective works on other communicators and has not said it is done (OpContext.elsewhere). */
  elsewhere?: boolean;
  /** Set when it runs here on the direct route (see direct-route.ts): rounds sent, and whether it joined the ring. */
  direct?: { rounds: number; joined: boolean };
}

/**
 * The operations this rank knows of, by sequence number: those running here, and those whose
 * descriptors or frames arrived before this rank called them (held until it does).
 */
export class OpTable {
  /** The sequence number the next run() gets. */
  nextSeq = 0;
  /** Operations running here (called, not yet settled). */
  active = 0;
  private readonly ops = new Map<number, OpState>();
  /** Held frames that keep their shared-memory slot (see hold), and bytes ever held as copies. */
  private pinned = 0;
  earlyCopied = 0;
  /**
   * Bytes of copies held now for operations not started here: what a left neighbour that runs
   * ahead (or a peer that sends frames of operations nobody started) costs this rank's memory.
   * The communicator keeps it within its budget (see Communicator.flow).
   */
  earlyBytes = 0;

  constructor(private readonly size: number) {}

  /** The state of `seq`, made on first mention. */
  state(seq: number): OpState {
    let st = this.ops.get(seq);
    if (!st) {
      st = { seq, table: new DescriptorTable(this.size), held: [], heldCopied: 0, pendingSends: 0, deadline: 0 };
      this.ops.set(seq, st);
    }
    return st;
  }

  get(seq: number): OpState | undefined {
    return this.ops.get(seq);
  }

  /** Operations that finished (or failed) here: later frames for them are dropped. */
  isPast(seq: number): boolean {
    return seq < this.nextSeq && !this.ops.has(seq);
  }

  values(): IterableIterator<OpState> {
    return this.ops.values();
  }

  /** Operations still pending here (in the order this rank first heard of them). */
  running(): OpState[] {
    return [...this.ops.values()].filter((s) => s.resolve);
  }

  forget(st: OpState): void {
    this.ops.delete(st.seq);
  }

  clear(): void {
    this.ops.clear();
    this.earlyBytes = 0;
  }

  /** `st` has started here: what it holds is no longer early. */
  started(st: OpState): void {
    this.earlyBytes -= st.heldCopied;
  }

  /** One of the operation's sends has left (or is no longer wanted). */
  sent(st: OpState): void {
    if (--st.pendingSends === 0 && !st.resolve && st.desc) this.ops.delete(st.seq);
  }

  /**
   * Keeps a frame that arrived before it could be applied; `pin`, if given, keeps its slot.
   * Returns the bytes copied (0 when the slot was kept).
   */
  hold(st: OpState, h: DataHeader, payload: Uint8Array, pin: (() => () => void) | undefined): number {
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
      return 0;
    }
    st.held.push([h, new Uint8Array(payload), undefined]);
    this.copied(st, payload.byteLength);
    return payload.byteLength;
  }

  private copied(st: OpState, bytes: number): void {
    this.earlyCopied += bytes;
    st.heldCopied += bytes;
    if (!st.coll) this.earlyBytes += bytes;
  }

  /** Takes an operation's held frames (to apply them, or to drop them). */
  takeHeld(st: OpState): OpState['held'] {
    const held = st.held;
    st.held = [];
    if (!st.coll) this.earlyBytes -= st.heldCopied;
    st.heldCopied = 0;
    return held;
  }

  /**
   * Every operation running here has received all its frames (and descriptors) from the left:
   * nothing this rank waits for is behind the left's later frames, so it may stop reading them.
   */
  leftDoneWithRunning(): boolean {
    if (this.active === 0) return true;
    for (const o of this.ops.values()) {
      if (o.resolve && o.coll && !(o.table.checked && o.coll.received)) return false;
    }
    return true;
  }

  /** Hands back the slots of an operation's held frames and forgets them. */
  dropHeld(st: OpState): void {
    for (const [, , release] of this.takeHeld(st)) if (release) this.unpin(release);
  }

  unpin(release: () => void): void {
    this.pinned--;
    release();
  }

  /**
   * An operation starts: frames of LATER operations must not keep slots now, because this one may
   * need the same left neighbour's next frames, which could be waiting for those very slots (if
   * the left runs ahead and the caller here waits for this operation before starting the next).
   */
  unpinLater(seq: number): void {
    if (this.pinned === 0) return;
    for (const st of this.ops.values()) {
      if (st.seq <= seq) continue;
      st.held = st.held.map(([h, p, release]) => {
        if (!release) return [h, p, undefined];
        const copy = new Uint8Array(p);
        this.copied(st, p.byteLength);
        this.unpin(release);
        return [h, copy, undefined];
      });
    }
  }
}

/**
 * The most bytes a running operation may hold while it waits for the rest of its descriptors:
 * twice (an all-reduce's two passes) what the descriptors in so far, this rank's aside, announce.
 */
export function heldBound(descs: readonly (OpDescriptor | undefined)[], rank: number): number {
  let bytes = 0;
  descs.forEach((d, r) => {
    if (d && r !== rank) bytes += d.count * (dtypeByCode(d.dtype)?.bytes ?? 0);
  });
  return 2 * bytes;
}
