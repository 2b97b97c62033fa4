import type { Link } from '../../transport/link.js';
import type { LinkControlMessage } from '../../transport/messages.js';
import type { DataHeader } from '../../transport/wire.js';
import type { OpState, OpTable } from './op-table.js';

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
 * Everything this rank sends to its right neighbour: data frames, kept to at most `maxInflight`
 * on the wire (each flush lets the next one go), and descriptors. Every send counts as pending on
 * its operation until it has left the process; `flushed` then lets the owner complete it, and
 * `failed` reports a write that could not be made.
 */
export class SendQueue {
  private readonly queue: QueuedSend[] = [];
  private inflight = 0;
  private readonly framePool = new FramePool();
  private stopped = false;
  /** The right neighbour has said goodbye and closed: see rightLeft(). */
  rightDone = false;

  constructor(
    private readonly link: Link | undefined,
    private readonly maxInflight: number,
    private readonly ops: OpTable,
    private readonly flushed: (st: OpState) => void,
    private readonly failed: (err: Error) => void,
  ) {}

  /**
   * A descriptor (ours or forwarded) counts as a pending send of its operation: the operation
   * resolves only once it has left the process. Otherwise a caller that blocks right after the
   * promise resolves (tfjs' synchronous applyGradients in Atomics.wait) could leave it unsent in a
   * corked socket — and its neighbours waiting for it forever.
   */
  sendTracked(st: OpState, msg: LinkControlMessage): void {
    if (this.rightDone) return;
    st.pendingSends++;
    this.link!.sendControl(msg, (err) => {
      if (err && !this.rightDone) return this.failed(err);
      this.ops.sent(st);
      this.flushed(st);
    });
  }

  enqueue(st: OpState, header: DataHeader, payload: QueuedSend['payload']): void {
    if (this.rightDone) return;
    st.pendingSends++;
    this.queue.push({ st, header, payload });
    this.pump();
  }

  /** Keeps up to maxInflight frames on the wire; each flush lets the next one go. */
  private pump(): void {
    while (this.inflight < this.maxInflight && this.queue.length > 0 && !this.stopped) {
      const { st, header, payload } = this.queue.shift()!;
      if (!st.resolve && st.desc) {
        // The operation failed here (e.g. a mismatch): its frames are no longer wanted.
        this.ops.sent(st);
        continue;
      }
      this.inflight++;
      const done = (err?: Error) => {
        this.inflight--;
        if (err && !this.rightDone) return this.failed(err);
        this.ops.sent(st);
        this.flushed(st);
        this.pump();
      };
      const link = this.link!;
      const giveBack = (buf: Uint8Array) => (err?: Error) => {
        this.framePool.give(buf, 2 * this.maxInflight);
        done(err);
      };
      if (payload instanceof Uint8Array) link.sendData(header, payload, done);
      else if (!link.sendFilled?.(header, payload.bytes, payload.fill, done)) {
        const buf = this.framePool.take(payload.bytes);
        link.sendData({ ...header, scale: payload.fill(buf) }, buf, giveBack(buf));
      }
    }
  }

  /**
   * The right neighbour said goodbye and closed its link. It calls shutdown() only once its
   * operations are done, so it needs nothing more from this rank: sends to it (queued, or still
   * waiting for their write callbacks) count as delivered, and later ones are dropped.
   */
  rightLeft(): void {
    this.rightDone = true;
    const queued = this.queue.splice(0);
    for (const q of queued) this.ops.sent(q.st);
  }

  /** The ring has failed: nothing more is sent. */
  stop(): void {
    this.stopped = true;
    this.queue.length = 0;
  }
}
