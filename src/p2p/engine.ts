import { bytesOf, dtypeByCode, type DTypeInfo, type NumericArray } from '../dtypes.js';
import {
  RingError,
  RingMismatchError,
  RingPeerLostError,
  RingProtocolError,
  RingShutdownError,
  RingTimeoutError,
} from '../errors.js';
import { schedYield } from '../kernels/index.js';
import type { Logger } from '../logger.js';
import type { Link, LinkHandlers } from '../transport/link.js';
import type { Mesh } from '../transport/mesh.js';
import type { DataHeader } from '../transport/wire.js';
import { EAGER_BYTES, EAGER_CREDIT, MAX_UNMATCHED, validateP2P, type P2PControl, type P2PMsg } from './messages.js';

export interface P2POptions {
  chunkBytes: number;
  maxInflight: number;
  timeoutMs: number;
  busyPollUs?: number;
  logger: Logger;
}

/**
 * How one call names ranks: a group numbers them its own way, so errors say what the caller
 * said (`dst: 1` in a group is world rank 3). `me`/`peer` are in that numbering.
 */
export interface P2PNames {
  me: number;
  peer: number;
}

interface Op {
  kind: 'send' | 'recv';
  ctx: string;
  /** World rank of the other side. */
  world: number;
  tag: number;
  dt: DTypeInfo;
  count: number;
  bytes: Uint8Array;
  names: P2PNames;
  deadline: number;
  resolve(): void;
  reject(e: Error): void;
  settled: boolean;
}

interface SendOp extends Op {
  kind: 'send';
  id: number;
  eager: boolean;
  /** Data frames handed to the link / flushed (a large send after its 'cts'). */
  queued: number;
  flushed: number;
  chunks: number;
}

interface RecvOp extends Op {
  kind: 'recv';
  got: number;
}

/** This rank's sending side towards one peer: the link it opened, and its sends in their states. */
interface Outgoing {
  link?: Link;
  failed?: RingError;
  nextId: number;
  /** Announced ('msg' sent), waiting for ack / cts / nak. */
  announced: Map<number, SendOp>;
  /** Not announced yet: waiting for the link, or for fewer unmatched sends. */
  backlog: SendOp[];
  /** Matched large sends whose frames are going out, in order. */
  streaming: SendOp[];
  inflight: number;
  eagerOut: number;
}

/** This rank's receiving side from one peer. */
interface Incoming {
  link: Link;
  /** Large sends matched here whose frames are arriving, by id. */
  transfers: Map<number, RecvOp>;
  /** Ids whose recv gave up (timed out): their frames are dropped. */
  dropped: Set<number>;
  unmatched: number;
  eagerHeld: number;
  closed?: RingError;
}

const labelOf = (op: Op) =>
  `${op.kind} ${op.kind === 'send' ? 'to' : 'from'} rank ${op.names.peer} (tag ${op.tag}${op.ctx.includes('/') ? `, ${op.ctx.slice(op.ctx.indexOf('/') + 1)}` : ''})`;
const describeCount = (n: number, dt: DTypeInfo | undefined) => `${n} ${dt?.name ?? 'unknown-dtype'} element${n === 1 ? '' : 's'}`;

/**
 * Point-to-point messages between any two ranks, matched by (context, source, tag) in call order
 * per pair, like MPI: a recv may be posted before or after its send, and any number may be in
 * flight at once. The protocol is in messages.ts; links come from the mesh on first use.
 *
 * A send resolves once a recv has taken it; a recv once its array is filled. Failures fail only
 * the operations they concern: a mismatch both sides of that pair, a timeout that operation, a
 * lost link every operation with that peer.
 */
export class PointToPoint {
  private readonly out = new Map<number, Outgoing>();
  private readonly inc = new Map<number, Incoming>();
  /** Recvs posted before their message arrived, and messages that arrived before their recv. */
  private readonly posted = new Map<string, RecvOp[]>();
  private readonly unexpected = new Map<string, Array<{ m: P2PMsg; src: number }>>();
  private pending = 0;
  private tick: NodeJS.Timeout | undefined;
  private closed: RingError | undefined;
  private readonly chunk: number;
  private polling = false;
  private lastProgress = 0;

  constructor(
    private readonly mesh: Mesh,
    private readonly o: P2POptions,
    /** The world's fatal error, if it broke (checked while operations wait). */
    private readonly worldError: () => RingError | undefined = () => undefined,
  ) {
    this.chunk = Math.max(8, Math.floor(o.chunkBytes / 8) * 8);
    mesh.serve('p2p', (peer, link) => this.incoming(peer, link));
  }

  get rank(): number {
    return this.mesh.rank;
  }

  /** What this rank holds for recvs not yet posted (diagnostics, tests): messages, and eager bytes. */
  get held(): { messages: number; bytes: number } {
    let messages = 0;
    let bytes = 0;
    for (const i of this.inc.values()) {
      messages += i.unmatched;
      bytes += i.eagerHeld;
    }
    return { messages, bytes };
  }

  send(ctx: string, dst: number, tag: number, x: NumericArray, dt: DTypeInfo, names: P2PNames): Promise<void> {
    return this.start<void>('send', ctx, dst, tag, x, dt, names);
  }

  recv<T extends NumericArray>(ctx: string, src: number, tag: number, into: T, dt: DTypeInfo, names: P2PNames): Promise<T> {
    return this.start<void>('recv', ctx, src, tag, into, dt, names).then(() => into);
  }

  private start<T>(kind: 'send' | 'recv', ctx: string, world: number, tag: number, x: NumericArray, dt: DTypeInfo, names: P2PNames): Promise<T> {
    const err = this.closed ?? this.worldError();
    if (err) return Promise.reject(err);
    return new Promise<T>((resolve, reject) => {
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
          this.done();
          resolve(undefined as T);
        },
        reject: (e) => {
          if (op.settled) return;
          op.settled = true;
          this.done();
          reject(e);
        },
      };
      this.pending++;
      this.armTick();
      this.progress();
      if (kind === 'send') this.startSend(Object.assign(op, { kind: 'send' as const, id: -1, eager: false, queued: 0, flushed: 0, chunks: 0 }));
      else this.startRecv(Object.assign(op, { kind: 'recv' as const, got: 0 }));
    });
  }

  private done(): void {
    if (--this.pending === 0) {
      clearInterval(this.tick);
      this.tick = undefined;
    }
  }

  // ---- sending ------------------------------------------------------------------------------

  private outgoing(dst: number): Outgoing {
    let o = this.out.get(dst);
    if (o) return o;
    o = { nextId: 0, announced: new Map(), backlog: [], streaming: [], inflight: 0, eagerOut: 0 };
    this.out.set(dst, o);
    const og = o;
    this.mesh.connect(dst, 'p2p').then(
      (link) => {
        if (this.closed) return link.close();
        og.link = link;
        link.setHandlers(<LinkHandlers<P2PControl>>{
          validate: validateP2P,
          data: () => this.linkFailed(dst, og, new RingProtocolError(`rank ${this.rank}: protocol error: rank ${dst} sent data on the link this rank sends on`, { rank: this.rank, ranks: [dst] })),
          control: (m) => this.onReply(dst, og, m),
          closed: (e) => this.linkFailed(dst, og, this.lost(dst, e)),
        });
        link.unref();
        if (this.polling) link.setPolling?.(true);
        this.announce(dst, og);
      },
      (e: Error) => this.linkFailed(dst, og, e instanceof RingError ? e : this.lost(dst, e)),
    );
    return o;
  }

  private startSend(op: SendOp): void {
    const o = this.outgoing(op.world);
    if (o.failed) return op.reject(o.failed);
    o.backlog.push(op);
    this.announce(op.world, o);
  }

  /** Announces backlogged sends while the link is up and the peer holds few unmatched ones. */
  private announce(dst: number, o: Outgoing): void {
    const link = o.link;
    if (!link) return;
    while (o.backlog.length > 0 && o.announced.size < MAX_UNMATCHED) {
      const op = o.backlog.shift()!;
      if (op.settled) continue;
      op.id = o.nextId++;
      const n = op.bytes.byteLength;
      op.eager = n <= EAGER_BYTES && o.eagerOut + n <= EAGER_CREDIT;
      const msg: P2PMsg = { t: 'msg', c: op.ctx, tag: op.tag, id: op.id, dt: op.dt.code, n: op.count };
      if (op.eager) {
        msg.p = op.bytes;
        o.eagerOut += n;
      }
      o.announced.set(op.id, op);
      link.sendControl(msg, (err) => {
        if (err) this.linkFailed(dst, o, this.lost(dst, err));
      });
    }
  }

  private onReply(dst: number, o: Outgoing, m: P2PControl): void {
    this.progress();
    if (m.t === 'msg') return this.linkFailed(dst, o, this.protocol(dst, `sent a point-to-point message on the link this rank sends on`));
    const op = o.announced.get(m.id);
    if (!op) return; // given up here (timed out)
    o.announced.delete(m.id);
    if (op.eager) o.eagerOut -= op.bytes.byteLength;
    if (m.t === 'ack') {
      if (!op.eager) return this.linkFailed(dst, o, this.protocol(dst, `acknowledged send #${m.id}, which needs a 'cts'`));
      op.resolve();
    } else if (m.t === 'nak') {
      op.reject(this.mismatch(op, m.dt, m.n, 'send'));
    } else {
      if (op.eager) return this.linkFailed(dst, o, this.protocol(dst, `sent 'cts' for send #${m.id}, which carried its data`));
      op.chunks = Math.ceil(op.bytes.byteLength / this.chunk);
      o.streaming.push(op);
      this.pump(dst, o);
    }
    this.announce(dst, o);
  }

  /** Keeps up to maxInflight data frames on the link; each flush lets the next go. */
  private pump(dst: number, o: Outgoing): void {
    const link = o.link!;
    while (o.inflight < this.o.maxInflight && o.streaming.length > 0) {
      const op = o.streaming[0];
      if (op.settled) {
        o.streaming.shift();
        continue;
      }
      const k = op.queued++;
      if (op.queued === op.chunks) o.streaming.shift();
      const at = k * this.chunk;
      const piece = op.bytes.subarray(at, Math.min(at + this.chunk, op.bytes.byteLength));
      const h: DataHeader = { seq: op.id, step: 0, chunk: k, codec: 0, scale: 1 };
      o.inflight++;
      link.sendData(h, piece, (err) => {
        o.inflight--;
        if (err) return this.linkFailed(dst, o, this.lost(dst, err));
        if (++op.flushed === op.chunks) op.resolve();
        this.pump(dst, o);
      });
    }
  }

  /** Every operation towards `dst` fails with `e`, and so does every later one. */
  private linkFailed(dst: number, o: Outgoing, e: RingError): void {
    if (o.failed) return;
    o.failed = e;
    const ops = [...o.announced.values(), ...o.backlog, ...o.streaming];
    o.announced.clear();
    o.backlog = [];
    o.streaming = [];
    for (const op of ops) op.reject(this.named(e, op));
    o.link?.close();
  }

  // ---- receiving ----------------------------------------------------------------------------

  private incoming(src: number, link: Link): void {
    const inc: Incoming = { link, transfers: new Map(), dropped: new Set(), unmatched: 0, eagerHeld: 0 };
    this.inc.set(src, inc);
    link.setHandlers(<LinkHandlers<P2PControl>>{
      validate: validateP2P,
      data: (h, p) => this.onFrame(src, inc, h, p),
      control: (m) => this.onMsg(src, inc, m),
      closed: (e) => this.incomingClosed(src, inc, this.lost(src, e)),
    });
    link.unref();
    if (this.polling) link.setPolling?.(true);
  }

  private startRecv(op: RecvOp): void {
    const k = matchKey(op.ctx, op.world, op.tag);
    const waiting = this.unexpected.get(k);
    if (waiting && waiting.length > 0) {
      const { m, src } = waiting.shift()!;
      if (waiting.length === 0) this.unexpected.delete(k);
      const inc = this.inc.get(src)!;
      inc.unmatched--;
      if (m.p) inc.eagerHeld -= m.p.byteLength;
      return this.match(op, m, inc);
    }
    const closed = this.inc.get(op.world)?.closed;
    if (closed) return op.reject(this.named(closed, op));
    const q = this.posted.get(k);
    if (q) q.push(op);
    else this.posted.set(k, [op]);
  }

  private onMsg(src: number, inc: Incoming, m: P2PControl): void {
    this.progress();
    if (m.t !== 'msg') return this.incomingClosed(src, inc, this.protocol(src, `sent '${m.t}' on the link it sends on`));
    const k = matchKey(m.c, src, m.tag);
    const q = this.posted.get(k);
    const op = q?.shift();
    if (q && q.length === 0) this.posted.delete(k);
    if (op) return this.match(op, m, inc);
    // Nobody asked yet: hold it (the sender's credit and unmatched cap bound what that costs).
    const eager = m.p?.byteLength ?? 0;
    if (inc.unmatched + 1 > MAX_UNMATCHED || inc.eagerHeld + eager > EAGER_CREDIT) {
      return this.incomingClosed(src, inc, this.protocol(src, `sent more unmatched messages than its credit allows`));
    }
    inc.unmatched++;
    inc.eagerHeld += eager;
    // The payload may be a view of a buffer the link reuses (a shared-memory mailbox): copy it.
    const held = m.p ? { ...m, p: Uint8Array.from(m.p) } : m;
    const u = this.unexpected.get(k);
    if (u) u.push({ m: held, src });
    else this.unexpected.set(k, [{ m: held, src }]);
  }

  private match(op: RecvOp, m: P2PMsg, inc: Incoming): void {
    if (m.dt !== op.dt.code || m.n !== op.count) {
      inc.link.sendControl({ t: 'nak', id: m.id, dt: op.dt.code, n: op.count });
      return op.reject(this.mismatch(op, m.dt, m.n, 'recv'));
    }
    if (m.p) {
      if (m.p.byteLength !== op.bytes.byteLength) {
        return this.incomingClosed(op.world, inc, this.protocol(op.world, `sent ${m.p.byteLength} bytes for ${describeCount(m.n, op.dt)}`));
      }
      op.bytes.set(m.p);
      inc.link.sendControl({ t: 'ack', id: m.id });
      return op.resolve();
    }
    if (op.bytes.byteLength === 0) return this.incomingClosed(op.world, inc, this.protocol(op.world, `announced an empty send without its (empty) data`));
    inc.transfers.set(m.id, op);
    inc.link.sendControl({ t: 'cts', id: m.id });
  }

  private onFrame(src: number, inc: Incoming, h: DataHeader, p: Uint8Array): void {
    this.progress();
    const op = inc.transfers.get(h.seq);
    if (!op) {
      if (inc.dropped.has(h.seq)) return;
      return this.incomingClosed(src, inc, this.protocol(src, `sent data for send #${h.seq}, which no recv here accepted`));
    }
    const at = h.chunk * this.chunk;
    const want = Math.min(this.chunk, op.bytes.byteLength - at);
    if (h.codec !== 0 || want <= 0 || p.byteLength !== want) {
      return this.incomingClosed(src, inc, this.protocol(src, `sent a bad frame for send #${h.seq} (chunk ${h.chunk}, ${p.byteLength} bytes)`));
    }
    op.bytes.set(p, at);
    op.got += want;
    if (op.got === op.bytes.byteLength) {
      inc.transfers.delete(h.seq);
      op.resolve();
    }
  }

  /** The link from `src` is gone: what was coming from it fails, and so do recvs waiting for it. */
  private incomingClosed(src: number, inc: Incoming, e: RingError): void {
    if (inc.closed) return;
    inc.closed = e;
    for (const op of inc.transfers.values()) op.reject(this.named(e, op));
    inc.transfers.clear();
    for (const [k, q] of [...this.posted]) {
      const keep = q.filter((op) => (op.world === src ? (op.reject(this.named(e, op)), false) : true));
      if (keep.length) this.posted.set(k, keep);
      else this.posted.delete(k);
    }
    // Announced large sends from it can never arrive now; eager ones are whole and still match.
    for (const [k, u] of [...this.unexpected]) {
      const keep = u.filter((x) => x.src !== src || x.m.p !== undefined);
      if (keep.length) this.unexpected.set(k, keep);
      else this.unexpected.delete(k);
    }
    inc.link.close();
  }

  // ---- time, liveness, errors ---------------------------------------------------------------

  /** One timer watches every waiting operation while any wait (and keeps the process alive). */
  private armTick(): void {
    if (this.tick) return;
    const t = this.o.timeoutMs;
    this.tick = setInterval(() => this.onTick(), t > 0 ? Math.min(1000, Math.max(20, Math.round(t / 8))) : 1000);
  }

  private onTick(): void {
    const broken = this.worldError();
    const now = Date.now();
    const expired = (op: Op) => broken !== undefined || (op.deadline > 0 && op.deadline <= now);
    const fail = (op: Op) => op.reject(broken ? this.named(broken, op) : this.timeout(op));
    for (const [dst, o] of this.out) {
      for (const [id, op] of [...o.announced]) {
        if (!expired(op)) continue;
        o.announced.delete(id);
        if (op.eager) o.eagerOut -= op.bytes.byteLength;
        fail(op);
      }
      for (const op of [...o.backlog, ...o.streaming]) if (expired(op)) fail(op);
      this.announce(dst, o);
    }
    for (const inc of this.inc.values()) {
      for (const [id, op] of [...inc.transfers]) {
        if (!expired(op)) continue;
        inc.transfers.delete(id);
        inc.dropped.add(id);
        fail(op);
      }
    }
    for (const [k, q] of [...this.posted]) {
      const keep = q.filter((op) => (expired(op) ? (fail(op), false) : true));
      if (keep.length) this.posted.set(k, keep);
      else this.posted.delete(k);
    }
  }

  private timeout(op: Op): RingTimeoutError {
    const o = op.kind === 'send' ? this.out.get(op.world) : undefined;
    const why =
      op.kind === 'recv'
        ? (op as RecvOp).got > 0
          ? `rank ${op.names.peer} stopped sending its data (${(op as RecvOp).got} of ${op.bytes.byteLength} bytes arrived)`
          : `rank ${op.names.peer} has sent nothing that matches it`
        : !o?.link
          ? `no link to rank ${op.names.peer} could be opened`
          : (op as SendOp).queued > 0
            ? `rank ${op.names.peer} has not taken all its data`
            : `rank ${op.names.peer} has not posted a matching recv`;
    return new RingTimeoutError(`rank ${op.names.me}: ${labelOf(op)} timed out after ${this.o.timeoutMs} ms: ${why}`, {
      rank: op.names.me,
      ranks: [op.names.peer],
      op: op.kind,
    });
  }

  private mismatch(op: Op, dt: number, n: number, side: 'send' | 'recv'): RingMismatchError {
    const theirs = describeCount(n, dtypeByCode(dt));
    const mine = describeCount(op.count, op.dt);
    const [sent, wanted] = side === 'send' ? [mine, theirs] : [theirs, mine];
    const [sender, receiver] = side === 'send' ? [op.names.me, op.names.peer] : [op.names.peer, op.names.me];
    return new RingMismatchError(
      `rank ${op.names.me}: ${labelOf(op)}: rank ${sender} sends ${sent} but rank ${receiver} receives ${wanted}`,
      { rank: op.names.me, ranks: [op.names.peer], op: op.kind, field: dt !== op.dt.code ? 'dtype' : 'count' },
    );
  }

  private lost(peer: number, e: Error | undefined): RingError {
    if (e instanceof RingError) return e;
    return new RingPeerLostError(`rank ${this.rank}: rank ${peer} is gone (${e?.message ?? 'its link closed'})`, { rank: this.rank, ranks: [peer] });
  }

  private protocol(peer: number, what: string): RingProtocolError {
    return new RingProtocolError(`rank ${this.rank}: protocol error: rank ${peer} ${what}`, { rank: this.rank, ranks: [peer] });
  }

  /** `e`, said by the operation (in its own numbering of ranks) when it is about that operation's peer. */
  private named(e: RingError, op: Op): RingError {
    if (!(e instanceof RingPeerLostError || e instanceof RingProtocolError)) return e;
    const Ctor = e.constructor as new (m: string, d: object) => RingError;
    const why = e.message.replace(/^rank \d+: /, '');
    return new Ctor(`rank ${op.names.me}: ${labelOf(op)} failed: ${why}`, { ...e.details, rank: op.names.me, ranks: e.details.ranks ?? [op.names.peer], op: op.kind });
  }

  // ---- polling (see Communicator.progress: the same reasons) --------------------------------

  private progress(): void {
    const limit = this.o.busyPollUs ?? 0;
    if (limit <= 0 || this.pending === 0) return;
    this.lastProgress = performance.now();
    if (this.polling) return;
    this.polling = true;
    this.links((l) => l.setPolling?.(true));
    setImmediate(this.poll);
  }

  private readonly poll = (): void => {
    if (this.pending === 0 || this.closed || performance.now() - this.lastProgress > (this.o.busyPollUs ?? 0) / 1000) {
      this.polling = false;
      this.links((l) => l.setPolling?.(false));
      if (this.polling) this.links((l) => l.setPolling?.(true));
      return;
    }
    this.links((l) => l.poll?.());
    if (performance.now() - this.lastProgress > 0.05) schedYield?.();
    setImmediate(this.poll);
  };

  private links(f: (l: Link) => void): void {
    for (const o of this.out.values()) if (o.link && !o.failed) f(o.link);
    for (const i of this.inc.values()) if (!i.closed) f(i.link);
  }

  /** Fails everything pending and closes the links (shutdown, or the world broke). */
  async shutdown(reason?: RingError): Promise<void> {
    if (this.closed) return;
    const e = reason ?? new RingShutdownError(`rank ${this.rank}: shutdown() called while a send or recv was pending`);
    this.closed = e;
    for (const [dst, o] of this.out) this.linkFailed(dst, o, e);
    for (const [src, i] of this.inc) this.incomingClosed(src, i, e);
    for (const q of this.posted.values()) for (const op of q) op.reject(e);
    this.posted.clear();
    this.unexpected.clear();
    clearInterval(this.tick);
  }
}

const matchKey = (ctx: string, src: number, tag: number) => `${ctx}|${src}|${tag}`;
