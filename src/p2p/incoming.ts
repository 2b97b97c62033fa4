import type { RingError } from '../errors.js';
import type { Link, LinkHandlers } from '../transport/link.js';
import type { DataHeader } from '../transport/wire.js';
import { EAGER_CREDIT, MAX_UNMATCHED, validateP2P, type P2PControl, type P2PMsg } from './messages.js';
import { lostError, mismatchError, namedFor, protocolError, type RecvOp } from './ops.js';
import type { SideHost } from './outgoing.js';

/** The receiving side from one peer, on the link that peer opened. */
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

const matchKey = (ctx: string, src: number, tag: number) => `${ctx}|${src}|${tag}`;

/**
 * Matching, MPI style: a message from `src` with `tag` in context `ctx` goes to the oldest recv
 * posted for exactly that, and a recv takes the oldest such message that arrived before it.
 * Links keep each sender's order, so per (context, pair, tag) sends and recvs pair in call order.
 */
export class Matcher {
  private readonly peers = new Map<number, Incoming>();
  private readonly posted = new Map<string, RecvOp[]>();
  private readonly unexpected = new Map<string, Array<{ m: P2PMsg; src: number }>>();
  /** How the recvs matched here got their bytes (diagnostics, tests). */
  readonly ways = { eager: 0, streamed: 0, singleCopy: 0, landedFrames: 0 };

  constructor(private readonly host: SideHost) {}

  attach(src: number, link: Link): void {
    const inc: Incoming = { link, transfers: new Map(), dropped: new Set(), unmatched: 0, eagerHeld: 0 };
    this.peers.set(src, inc);
    link.setHandlers(<LinkHandlers<P2PControl>>{
      validate: validateP2P,
      data: (h, p) => this.onFrame(src, inc, h, p),
      land: (h, length) => {
        const op = inc.transfers.get(h.seq);
        const at = h.chunk * this.host.chunk;
        return op && length === Math.min(this.host.chunk, op.bytes.byteLength - at) ? op.bytes.subarray(at, at + length) : undefined;
      },
      control: (m) => this.onMsg(src, inc, m),
      closed: (e) => this.close(src, inc, lostError(this.host.rank, src, e)),
    });
    link.unref();
    if (this.host.polling) link.setPolling?.(true);
  }

  post(op: RecvOp): void {
    const k = matchKey(op.ctx, op.world, op.tag);
    const waiting = this.unexpected.get(k);
    if (waiting && waiting.length > 0) {
      const { m, src } = waiting.shift()!;
      if (waiting.length === 0) this.unexpected.delete(k);
      const inc = this.peers.get(src)!;
      inc.unmatched--;
      if (m.p) inc.eagerHeld -= m.p.byteLength;
      return this.match(op, m, inc);
    }
    const closed = this.peers.get(op.world)?.closed;
    if (closed) return op.reject(namedFor(closed, op));
    const q = this.posted.get(k);
    if (q) q.push(op);
    else this.posted.set(k, [op]);
  }

  private onMsg(src: number, inc: Incoming, m: P2PControl): void {
    this.host.progress();
    if (m.t === 'drop') return this.dropped(src, inc, m.id);
    if (m.t !== 'msg') return this.close(src, inc, protocolError(this.host.rank, src, `sent '${m.t}' on the link it sends on`));
    const k = matchKey(m.c, src, m.tag);
    const q = this.posted.get(k);
    const op = q?.shift();
    if (q && q.length === 0) this.posted.delete(k);
    if (op) return this.match(op, m, inc);
    // Nobody asked yet: hold it (the sender's credit and unmatched cap bound what that costs).
    const eager = m.p?.byteLength ?? 0;
    if (inc.unmatched + 1 > MAX_UNMATCHED || inc.eagerHeld + eager > EAGER_CREDIT) {
      return this.close(src, inc, protocolError(this.host.rank, src, 'sent more unmatched messages than its credit allows'));
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
      return op.reject(mismatchError(op, m.dt, m.n));
    }
    if (m.p) {
      if (m.p.byteLength !== op.bytes.byteLength) {
        return this.close(op.world, inc, protocolError(this.host.rank, op.world, `sent ${m.p.byteLength} bytes for ${m.n} elements of ${op.dt.name}`));
      }
      op.bytes.set(m.p);
      this.ways.eager++;
      inc.link.sendControl({ t: 'ack', id: m.id });
      return op.resolve();
    }
    if (op.bytes.byteLength === 0) return this.close(op.world, inc, protocolError(this.host.rank, op.world, 'announced an empty send without its (empty) data'));
    // Same host: one copy straight out of the sender (process_vm_readv), instead of two through slots.
    if (m.a !== undefined && inc.link.sharedMemory && this.host.peerRead(op.world, m.a, op.bytes)) {
      this.ways.singleCopy++;
      inc.link.sendControl({ t: 'got', id: m.id });
      return op.resolve();
    }
    this.ways.streamed++;
    inc.transfers.set(m.id, op);
    inc.link.sendControl({ t: 'cts', id: m.id });
  }

  private onFrame(src: number, inc: Incoming, h: DataHeader, p: Uint8Array): void {
    this.host.progress();
    const op = inc.transfers.get(h.seq);
    if (!op) {
      if (inc.dropped.has(h.seq)) return;
      return this.close(src, inc, protocolError(this.host.rank, src, `sent data for send #${h.seq}, which no recv here accepted`));
    }
    const at = h.chunk * this.host.chunk;
    const want = Math.min(this.host.chunk, op.bytes.byteLength - at);
    if (h.codec !== 0 || want <= 0 || p.byteLength !== want) {
      return this.close(src, inc, protocolError(this.host.rank, src, `sent a bad frame for send #${h.seq} (chunk ${h.chunk}, ${p.byteLength} bytes)`));
    }
    // A payload that landed in place (see LinkHandlers.land) is there already.
    if (p.buffer !== op.bytes.buffer || p.byteOffset !== op.bytes.byteOffset + at) op.bytes.set(p, at);
    else this.ways.landedFrames++;
    op.got += want;
    if (op.got === op.bytes.byteLength) {
      inc.transfers.delete(h.seq);
      op.resolve();
    }
  }

  /**
   * The sender's deadline for send `id` passed: forget it if no recv took it (and say so), so that
   * no later recv reads what is the caller's again. If a recv took it, the answer already sent
   * (and on the same ordered link ahead of anything else) stands.
   */
  private dropped(src: number, inc: Incoming, id: number): void {
    for (const [k, u] of this.unexpected) {
      const i = u.findIndex((x) => x.src === src && x.m.id === id);
      if (i < 0) continue;
      const [{ m }] = u.splice(i, 1);
      if (u.length === 0) this.unexpected.delete(k);
      inc.unmatched--;
      if (m.p) inc.eagerHeld -= m.p.byteLength;
      inc.link.sendControl({ t: 'dropped', id });
      return;
    }
  }

  /** The link from `src` is gone: what was coming from it fails, and so do recvs waiting for it. */
  private close(src: number, inc: Incoming, e: RingError): void {
    if (inc.closed) return;
    inc.closed = e;
    for (const op of inc.transfers.values()) op.reject(namedFor(e, op));
    inc.transfers.clear();
    this.dropPosted((op) => op.world === src, (op) => op.reject(namedFor(e, op)));
    // Announced large sends from it can never arrive now; eager ones are whole and still match.
    for (const [k, u] of [...this.unexpected]) {
      const keep = u.filter((x) => x.src !== src || x.m.p !== undefined);
      if (keep.length) this.unexpected.set(k, keep);
      else this.unexpected.delete(k);
    }
    inc.link.close();
  }

  private dropPosted(which: (op: RecvOp) => boolean, then: (op: RecvOp) => void): void {
    for (const [k, q] of [...this.posted]) {
      const keep = q.filter((op) => (which(op) ? (then(op), false) : true));
      if (keep.length) this.posted.set(k, keep);
      else this.posted.delete(k);
    }
  }

  /** Fails the recvs `expired` picks (with `failOp`). */
  expire(expired: (op: RecvOp) => boolean, failOp: (op: RecvOp, why: string) => void): void {
    for (const inc of this.peers.values()) {
      for (const [id, op] of [...inc.transfers]) {
        if (!expired(op)) continue;
        inc.transfers.delete(id);
        inc.dropped.add(id);
        failOp(op, `rank ${op.names.peer} stopped sending its data (${op.got} of ${op.bytes.byteLength} bytes arrived)`);
      }
    }
    this.dropPosted(expired, (op) => failOp(op, `rank ${op.names.peer} has sent nothing that matches it`));
  }

  /** Everything fails with `e` (shutdown). */
  closeAll(e: RingError): void {
    for (const [src, inc] of this.peers) this.close(src, inc, e);
    this.dropPosted(() => true, (op) => op.reject(e));
    this.unexpected.clear();
  }

  get held(): { messages: number; bytes: number } {
    let messages = 0;
    let bytes = 0;
    for (const i of this.peers.values()) {
      messages += i.unmatched;
      bytes += i.eagerHeld;
    }
    return { messages, bytes };
  }

  links(f: (l: Link) => void): void {
    for (const i of this.peers.values()) if (!i.closed) f(i.link);
  }
}
