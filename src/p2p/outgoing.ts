import type { RingError } from '../errors.js';
import type { Link, LinkHandlers } from '../transport/link.js';
import type { DataHeader } from '../transport/wire.js';
import { EAGER_BYTES, EAGER_CREDIT, MAX_UNMATCHED, validateP2P, type P2PControl, type P2PMsg } from './messages.js';
import { lostError, mismatchError, namedFor, protocolError, type SendOp } from './ops.js';

/** How long a send whose deadline passed waits for the peer to confirm it forgot it. */
const DROP_GRACE_MS = 2000;

/** What a side of the engine needs from the engine. */
export interface SideHost {
  /** This rank (world numbering). */
  readonly rank: number;
  /** Bytes per data frame of a large send. */
  readonly chunk: number;
  readonly maxInflight: number;
  /** Something arrived: keep polling (see PointToPoint.progress). */
  progress(): void;
  /** Whether links should poll now (a new link joins in). */
  readonly polling: boolean;
  /** Where `bytes` are in this process, for a single-copy read by a peer of this host (see peerRead). */
  addressOf(link: Link, bytes: Uint8Array): number | undefined;
  /** Copies `into.byteLength` bytes from `address` in peer `src` (same host); false if it cannot. */
  peerRead(src: number, address: number, into: Uint8Array): boolean;
}

/**
 * This rank's sends to one peer, on the link it opened to it (messages.ts has the protocol): a
 * send waits in the backlog until the link is up and the peer holds fewer than MAX_UNMATCHED of
 * ours, is announced (with its bytes, when small and within the credit), and ends with the
 * peer's 'ack' (eager), its 'nak' (a mismatch), or — after a 'cts' — once its frames are flushed.
 */
export class Outgoing {
  link: Link | undefined;
  failed: RingError | undefined;
  private nextId = 0;
  private readonly announced = new Map<number, SendOp>();
  private backlog: SendOp[] = [];
  private streaming: SendOp[] = [];
  private inflight = 0;
  private eagerOut = 0;

  constructor(
    private readonly dst: number,
    private readonly host: SideHost,
    link: Promise<Link>,
  ) {
    link.then(
      (l) => this.up(l),
      (e: Error) => this.fail(lostError(host.rank, dst, e)),
    );
  }

  private up(link: Link): void {
    if (this.failed) return link.close();
    this.link = link;
    link.setHandlers(<LinkHandlers<P2PControl>>{
      validate: validateP2P,
      data: () => this.fail(protocolError(this.host.rank, this.dst, 'sent data on the link this rank sends on')),
      control: (m) => this.onReply(m),
      closed: (e) => this.fail(lostError(this.host.rank, this.dst, e)),
    });
    link.unref();
    if (this.host.polling) link.setPolling?.(true);
    this.announce();
  }

  add(op: SendOp): void {
    if (this.failed) return op.reject(this.failed);
    this.backlog.push(op);
    this.announce();
  }

  /** Announces backlogged sends while the link is up and the peer holds few unmatched ones. */
  private announce(): void {
    const link = this.link;
    if (!link || this.failed) return;
    while (this.backlog.length > 0 && this.announced.size < MAX_UNMATCHED) {
      const op = this.backlog.shift()!;
      if (op.settled) continue;
      op.id = this.nextId++;
      const n = op.bytes.byteLength;
      op.eager = n <= EAGER_BYTES && this.eagerOut + n <= EAGER_CREDIT;
      const msg: P2PMsg = { t: 'msg', c: op.ctx, tag: op.tag, id: op.id, dt: op.dt.code, n: op.count };
      if (op.eager) {
        msg.p = op.bytes;
        this.eagerOut += n;
      } else {
        const a = this.host.addressOf(link, op.bytes);
        if (a !== undefined) msg.a = a;
      }
      this.announced.set(op.id, op);
      link.sendControl(msg, (err) => {
        if (err) this.fail(lostError(this.host.rank, this.dst, err));
      });
    }
  }

  private onReply(m: P2PControl): void {
    this.host.progress();
    if (m.t === 'msg' || m.t === 'drop') return this.fail(protocolError(this.host.rank, this.dst, `sent '${m.t}' on the link this rank sends on`));
    const op = this.announced.get(m.id);
    if (!op) return; // given up here
    this.announced.delete(m.id);
    if (op.eager) this.eagerOut -= op.bytes.byteLength;
    if (m.t === 'dropped') {
      if (!op.dropping) return this.fail(protocolError(this.host.rank, this.dst, `sent 'dropped' for send #${m.id}, which was not dropped`));
      op.reject(op.dropping);
    } else if (m.t === 'ack') {
      if (!op.eager) return this.fail(protocolError(this.host.rank, this.dst, `acknowledged send #${m.id}, which needs a 'cts'`));
      op.resolve();
    } else if (m.t === 'nak') {
      op.reject(mismatchError(op, m.dt, m.n));
    } else if (m.t === 'got') {
      // The receiver copied the bytes out of this process: nothing left to send.
      if (op.eager) return this.fail(protocolError(this.host.rank, this.dst, `sent 'got' for send #${m.id}, which carried its data`));
      op.resolve();
    } else {
      if (op.eager) return this.fail(protocolError(this.host.rank, this.dst, `sent 'cts' for send #${m.id}, which carried its data`));
      op.chunks = Math.ceil(op.bytes.byteLength / this.host.chunk);
      this.streaming.push(op);
      this.pump();
    }
    this.announce();
  }

  /** Keeps up to maxInflight data frames on the link; each flush lets the next go. */
  private pump(): void {
    const link = this.link!;
    const chunk = this.host.chunk;
    while (this.inflight < this.host.maxInflight && this.streaming.length > 0 && !this.failed) {
      const op = this.streaming[0];
      if (op.settled) {
        this.streaming.shift();
        continue;
      }
      const k = op.queued++;
      if (op.queued === op.chunks) this.streaming.shift();
      const at = k * chunk;
      const h: DataHeader = { seq: op.id, step: 0, chunk: k, codec: 0, scale: 1 };
      this.inflight++;
      link.sendData(h, op.bytes.subarray(at, Math.min(at + chunk, op.bytes.byteLength)), (err) => {
        this.inflight--;
        if (err) return this.fail(lostError(this.host.rank, this.dst, err));
        if (++op.flushed === op.chunks) op.resolve();
        this.pump();
      });
    }
  }

  /** Every send to this peer fails with `e`, and so does every later one. */
  fail(e: RingError): void {
    if (this.failed) return;
    this.failed = e;
    const ops = [...this.announced.values(), ...this.backlog, ...this.streaming];
    this.announced.clear();
    this.backlog = [];
    this.streaming = [];
    for (const op of ops) op.reject(namedFor(e, op));
    this.link?.close();
  }

  /**
   * The sends whose deadline passed (`expired`) fail with `errorFor`'s error. One the peer holds
   * unmatched fails only once the peer has forgotten it ('drop', then 'dropped'; see messages.ts),
   * or when the peer has not answered within DROP_GRACE_MS more.
   */
  expire(expired: (op: SendOp) => boolean, errorFor: (op: SendOp, why: string) => RingError, broken: RingError | undefined): void {
    for (const [id, op] of [...this.announced]) {
      if (!expired(op)) continue;
      if (op.dropping || broken || !this.link) {
        this.announced.delete(id);
        if (op.eager) this.eagerOut -= op.bytes.byteLength;
        op.reject(broken ? errorFor(op, '') : (op.dropping ?? errorFor(op, `rank ${op.names.peer} has not posted a matching recv`)));
        continue;
      }
      op.dropping = errorFor(op, `rank ${op.names.peer} has not posted a matching recv`);
      op.deadline = Date.now() + DROP_GRACE_MS;
      this.link.sendControl({ t: 'drop', id });
    }
    for (const op of [...this.backlog, ...this.streaming]) {
      if (!expired(op)) continue;
      op.reject(
        errorFor(op, !this.link ? `no link to rank ${op.names.peer} could be opened` : op.queued > 0 ? `rank ${op.names.peer} has not taken all its data` : `rank ${op.names.peer} holds too many unmatched sends of this rank`),
      );
    }
    this.announce();
  }
}
