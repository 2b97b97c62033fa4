import { bytesOf, type DTypeInfo, type NumericArray } from '../dtypes.js';
import { RingShutdownError, type RingError } from '../errors.js';
import { peerMemory } from '../kernels/index.js';
import { BusyPoller } from '../transport/busy-poll.js';
import type { Logger } from '../logger.js';
import type { Link } from '../transport/link.js';
import type { Mesh } from '../transport/mesh.js';
import { Matcher } from './incoming.js';
import { namedFor, timeoutError, type Op, type P2PNames, type RecvOp, type SendOp } from './ops.js';
import { Outgoing, type SideHost } from './outgoing.js';

export type { P2PNames } from './ops.js';

export interface P2POptions {
  chunkBytes: number;
  maxInflight: number;
  timeoutMs: number;
  busyPollUs?: number;
  busyPollBackoff?: boolean;
  logger: Logger;
}

/**
 * Point-to-point messages between any two ranks, matched by (context, source, tag) in call order
 * per pair, like MPI: a recv may be posted before or after its send, and any number may be in
 * flight at once. The protocol is in messages.ts; the sending side per peer in outgoing.ts, the
 * receiving side and matching in incoming.ts; links come from the mesh on first use.
 *
 * A send resolves once a recv has taken it; a recv once its array is filled. Failures fail only
 * the operations they concern: a mismatch both sides of that pair, a timeout that operation, a
 * lost link every operation with that peer, a broken world ring (a rank died) everything.
 */
export class PointToPoint implements SideHost {
  readonly rank: number;
  readonly chunk: number;
  readonly maxInflight: number;
  private readonly out = new Map<number, Outgoing>();
  private readonly matcher: Matcher;
  private pending = 0;
  private tick: NodeJS.Timeout | undefined;
  private closed: RingError | undefined;
  private readonly poller: BusyPoller;
  /** Peers this rank could not read from (another user, Yama's ptrace_scope): slots from then on. */
  private readonly noPeerRead = new Set<number>();

  constructor(
    private readonly mesh: Mesh,
    private readonly o: P2POptions,
    /** The world's fatal error, if it broke (checked while operations wait). */
    private readonly worldError: () => RingError | undefined = () => undefined,
  ) {
    this.rank = mesh.rank;
    this.chunk = Math.max(8, Math.floor(o.chunkBytes / 8) * 8);
    this.maxInflight = o.maxInflight;
    this.matcher = new Matcher(this);
    this.poller = new BusyPoller((f) => this.links(f), o, () => this.pending);
    mesh.serve('p2p', (peer, link) => this.matcher.attach(peer, link));
  }

  /** How this rank's recvs got their bytes: with the message, streamed in frames, or copied out of the sender. */
  get received(): { eager: number; streamed: number; singleCopy: number; landedFrames: number } {
    return { ...this.matcher.ways };
  }

  /** What this rank holds for recvs not yet posted (diagnostics, tests): messages, and eager bytes. */
  get held(): { messages: number; bytes: number } {
    return this.matcher.held;
  }

  send(ctx: string, dst: number, tag: number, x: NumericArray, dt: DTypeInfo, names: P2PNames): Promise<void> {
    return this.start('send', ctx, dst, tag, x, dt, names);
  }

  recv<T extends NumericArray>(ctx: string, src: number, tag: number, into: T, dt: DTypeInfo, names: P2PNames): Promise<T> {
    return this.start('recv', ctx, src, tag, into, dt, names).then(() => into);
  }

  private start(kind: 'send' | 'recv', ctx: string, world: number, tag: number, x: NumericArray, dt: DTypeInfo, names: P2PNames): Promise<void> {
    const err = this.closed ?? this.worldError();
    if (err) return Promise.reject(err);
    return new Promise<void>((resolve, reject) => {
      const op: Op = {
        kind,
        ctx,
        world,
        tag,
        dt,
        count: x.length,
        bytes: bytesOf(x),
        names,
        deadline: this.o.timeoutMs > 0 ? Date.now() + this.o.timeoutMs : 0,
        settled: false,
        resolve: () => {
          if (op.settled) return;
          op.settled = true;
          this.ended();
          resolve();
        },
        reject: (e) => {
          if (op.settled) return;
          op.settled = true;
          this.ended();
          reject(e);
        },
      };
      this.pending++;
      this.armTick();
      this.progress();
      if (kind === 'send') this.outgoing(world).add(Object.assign(op, { kind, id: -1, eager: false, queued: 0, flushed: 0, chunks: 0 }) as SendOp);
      else this.matcher.post(Object.assign(op, { kind, got: 0 }) as RecvOp);
    });
  }

  private ended(): void {
    if (--this.pending === 0) {
      clearInterval(this.tick);
      this.tick = undefined;
    }
  }

  private outgoing(dst: number): Outgoing {
    let o = this.out.get(dst);
    if (!o) {
      o = new Outgoing(dst, this, this.mesh.connect(dst, 'p2p'));
      this.out.set(dst, o);
    }
    return o;
  }

  /** One timer watches every waiting operation while any waits (and keeps the process alive). */
  private armTick(): void {
    if (this.tick) return;
    const t = this.o.timeoutMs;
    this.tick = setInterval(() => this.onTick(), t > 0 ? Math.min(1000, Math.max(20, Math.round(t / 8))) : 1000);
  }

  private onTick(): void {
    const broken = this.worldError();
    const now = Date.now();
    const expired = (op: Op) => broken !== undefined || (op.deadline > 0 && op.deadline <= now);
    const errorFor = (op: Op, why: string) => (broken ? namedFor(broken, op) : timeoutError(op, this.o.timeoutMs, why));
    for (const o of this.out.values()) o.expire(expired, errorFor, broken);
    this.matcher.expire(expired, (op, why) => op.reject(errorFor(op, why)));
  }

  // ---- single-copy transfers on one host ----------------------------------------------------

  addressOf(link: Link, bytes: Uint8Array): number | undefined {
    return peerMemory && link.sharedMemory ? peerMemory.addressOf(bytes) : undefined;
  }

  peerRead(src: number, address: number, into: Uint8Array): boolean {
    const pid = this.mesh.pidOf?.(src);
    if (!peerMemory || pid === undefined || this.noPeerRead.has(src)) return false;
    try {
      peerMemory.read(pid, address, into);
      return true;
    } catch (e) {
      this.noPeerRead.add(src);
      this.o.logger.info(`rank ${this.rank}: large sends from rank ${src} go through shared-memory slots: ${(e as Error).message}`);
      return false;
    }
  }

  // ---- polling (see transport/busy-poll.ts) ------------------------------------------------

  /**
   * Polling pays where a peer can hand messages over without a system call (a shared-memory
   * mailbox, on one host). Over sockets alone it did not: a 64 MiB exchange of 2 ranks took
   * 48-63 ms polling against 48-50 ms sleeping in epoll, three runs each.
   */
  progress(): void {
    // Once a link has shared memory it keeps it: the scan (per message) stops then.
    this.mailboxes ||= this.anyLink((l) => l.sharedMemory === true);
    if (this.mailboxes) this.poller.progress();
  }

  /** Some open link has shared memory, so its peer can post to a mailbox while this rank polls. */
  private mailboxes = false;

  private anyLink(pred: (l: Link) => boolean): boolean {
    let found = false;
    this.links((l) => {
      found ||= pred(l);
    });
    return found;
  }

  get polling(): boolean {
    return this.poller.polling;
  }

  private links(f: (l: Link) => void): void {
    for (const o of this.out.values()) if (o.link && !o.failed) f(o.link);
    this.matcher.links(f);
  }

  /** Fails everything pending and closes the links. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    const e = new RingShutdownError(`rank ${this.rank}: shutdown() called while a send or recv was pending`);
    this.closed = e;
    for (const o of this.out.values()) o.fail(e);
    this.matcher.closeAll(e);
    this.poller.stop();
    clearInterval(this.tick);
  }
}
