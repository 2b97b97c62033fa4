import type { SmallOps } from '../../env.js';
import { RingProtocolError } from '../../errors.js';
import type { BusyPoller } from '../../transport/busy-poll.js';
import type { Link, LinkHandlers } from '../../transport/link.js';
import type { DescMsg, LinkControlMessage } from '../../transport/messages.js';
import type { Mesh } from '../../transport/mesh.js';
import { firstDifference, type OpDescriptor } from '../descriptor.js';
import { mod } from '../schedule.js';
import { checkDescriptorMessage, type Via } from './agreement.js';
import { disseminationPeers, disseminationRounds, expectedFrom, inRun, roundSends, runNeeded, type BlockRun } from './dissemination.js';
import type { Liveness } from './liveness.js';
import type { OpState, OpTable } from './op-table.js';

/**
 * The direct route for small operations: descriptors of operations that move no data frames
 * (Collective.frameless: a barrier, an all-reduce whose inputs ride inline, an all-to-all's
 * agreement) are gathered over links straight to other ranks, in ceil(log_R N) rounds of the
 * dissemination schedule (dissemination.ts) instead of the ring's N-1 sequential hops. Across
 * hosts a hop costs a network round of tens of microseconds or more, so a 4-byte all-reduce of 4
 * hosts takes one hop instead of three.
 *
 * Each block that arrives goes into the same descriptor table the ring fills (agreement.ts), so
 * the agreement, mismatch errors, stall warnings and completion are the ring's. A rank relays the
 * blocks of round k as soon as its run is long enough (runNeeded): rounds overlap, nobody waits
 * for a round to end everywhere.
 *
 * **Ranks that take different routes for one operation** (rank A all-reduces 4 bytes, B 1 MiB:
 * A's is eager, B's is a ring all-reduce) must still all end with the same mismatch error. Every
 * rank forwards ring descriptors whatever its own route, and accepts blocks from both routes (a
 * copy that came the other way must be identical). A rank on the direct route also sends its own
 * descriptor around the ring — it **joins** the ring — as soon as it sees that some rank takes the
 * ring: a descriptor arrived around the ring, or one unlike its own (routes follow from
 * descriptors, and every rank has the same rule: init() checks RINGREDUCE_SMALL_OPS agrees). The
 * ring rank's descriptor goes all the way round, so every direct rank joins, and the ring then
 * carries every descriptor to every rank: the usual mismatch error everywhere, never a hang.
 *
 * Links: one per pair of ranks that exchange blocks in either direction ((R-1) x rounds peers
 * each way), opened when the communicator is made; the lower rank connects (so each pair agrees
 * without a message), and messages wait for their link. A link offers one small shared-memory
 * slot: on one host the region's mailboxes carry the messages while ranks busy-poll.
 */

/** Where the direct route's links come from (the job's mesh, channel 'direct'). */
export interface DirectLinks {
  /** Opens a link to `peer` (this rank is the lower of the two). */
  connect(peer: number): Promise<Link>;
  /** Every link a peer opens to this rank goes to `handler`. */
  serve(handler: (peer: number, link: Link) => void): void;
}

/** The direct route's links on a mesh: control messages only, so one 64-byte slot (mailboxes). */
export function meshLinks(mesh: Mesh, channel = 'direct'): DirectLinks {
  return { connect: (peer) => mesh.connect(peer, channel, { count: 1, bytes: 64 }), serve: (h) => mesh.serve(channel, h) };
}

/** What the direct route needs of its communicator. */
export interface DirectHost {
  readonly rank: number;
  readonly size: number;
  /** The ring has failed, or shutdown() has been called. */
  broken(): boolean;
  closing(): boolean;
  /** `peer` broke the protocol: the ring fails, naming it. */
  protocol(peer: number, what: string): void;
  /** A checked descriptor that `sender` passed on: into `st`'s table, and on (see Communicator.accept). */
  accept(st: OpState, origin: number, d: OpDescriptor, p: Uint8Array | undefined, via: Via, sender: number): void;
  /** Sends this rank's descriptor of `st` around the ring. */
  sendOwn(st: OpState): void;
  /** Settles `st` if it has everything it waits for. */
  maybeComplete(st: OpState): void;
  /** Runs a link handler so that what it throws fails the communicator instead of escaping (see Communicator). */
  guard<A extends unknown[]>(peer: number, f: (...a: A) => void): (...a: A) => void;
}

/** The communicator's parts the direct route shares: its operations, their liveness, the busy poller. */
export interface DirectParts {
  readonly ops: OpTable;
  readonly liveness: Liveness;
  readonly poller: BusyPoller;
}

interface Peer {
  link?: Link;
  /** Messages (and their callbacks) waiting for the link. */
  queued: Array<[DescMsg, (err?: Error) => void]>;
  /** It said goodbye: it needs nothing more and sends nothing more. */
  bye: boolean;
}

export class DirectRoute {
  readonly rounds: number;
  private readonly peers = new Map<number, Peer>();
  private closed = false;
  private refd = false;
  /** Descriptors sent on direct links (diagnostics, tests). */
  sent = 0;

  constructor(
    private readonly host: DirectHost,
    private readonly parts: DirectParts,
    links: DirectLinks,
    readonly radix: number,
  ) {
    const { rank, size } = host;
    this.rounds = disseminationRounds(size, radix);
    for (const p of disseminationPeers(rank, size, radix)) this.peers.set(p, { queued: [], bye: false });
    links.serve((peer, link) => this.arrived(peer, link));
    for (const p of this.peers.keys()) {
      if (p < rank) continue;
      links.connect(p).then(
        (l) => this.up(p, l),
        (e: Error) => this.closed || this.lost(p, `cannot be reached on a direct link (${e.message})`, false),
      );
    }
  }

  /** The link to `peer` is gone or could not be opened or written to (not after its goodbye). */
  private lost(peer: number, how: string, quietIfIdle: boolean): void {
    this.parts.liveness.peerLost(peer, 'direct', how, { quietIfIdle });
  }

  /** Calls `f` on every open link (busy polling). */
  each(f: (l: Link) => void): void {
    for (const p of this.peers.values()) if (p.link) f(p.link);
  }

  ref(on: boolean): void {
    this.refd = on;
    this.each((l) => (on ? l.ref() : l.unref()));
  }

  /** `st` starts here on the direct route: the rounds its run allows go now (and it joins the ring if it must). */
  start(st: OpState): void {
    st.direct = { rounds: 0, joined: false };
    this.advance(st);
    if (this.mustJoin(st)) this.join(st);
  }

  /** A descriptor `d` of `st` came by `via` and is in its table: this rank may have to join the ring, and rounds it completes go. */
  accepted(st: OpState, d: OpDescriptor, via: Via): void {
    if (!st.direct) return;
    if (this.mustJoin(st, d, via)) this.join(st);
    this.advance(st);
  }

  /** `st` runs here on the direct route, but some rank takes the ring: this rank's descriptor goes round too. */
  private join(st: OpState): void {
    st.direct!.joined = true;
    this.host.sendOwn(st);
  }

  /** Makes the rounds of `st` whose blocks this rank now holds (see runNeeded). */
  private advance(st: OpState): void {
    const r = st.direct;
    if (!r || this.closed) return;
    const { rank, size } = this.host;
    const descs = st.table.descs;
    while (r.rounds < this.rounds) {
      const need = runNeeded(size, this.radix, r.rounds);
      for (let i = 0; i < need; i++) if (!descs[mod(rank + i, size)]) return;
      for (const run of roundSends(rank, size, this.radix, r.rounds)) this.sendRun(st, run);
      r.rounds++;
    }
  }

  /**
   * Whether `st`, running here on the direct route, must join the ring (see the file comment):
   * `d` (absent: every descriptor in so far) came around the ring or differs from this rank's in a
   * field the ranks must agree on (an all-to-all's counts may differ: every rank's is frameless).
   */
  private mustJoin(st: OpState, d?: OpDescriptor, via?: Via): boolean {
    const own = st.desc;
    if (!st.direct || st.direct.joined || !own) return false;
    const unlike = (x: OpDescriptor | undefined) => x !== undefined && firstDifference(own, x) !== undefined;
    if (d) return via === 'ring' || unlike(d);
    return st.table.ringSeen || st.table.descs.some(unlike);
  }

  private sendRun(st: OpState, run: BlockRun): void {
    const { size } = this.host;
    for (let i = 0; i < run.count; i++) {
      const origin = mod(run.first + i, size);
      const p = st.table.inline[origin];
      const m: DescMsg = { t: 'desc', seq: st.seq, origin, d: st.table.descs[origin]! };
      if (p) m.p = p;
      this.send(st, run.peer, m);
    }
  }

  /** A tracked send (see SendQueue.sendTracked: the operation completes only once it has left). */
  private send(st: OpState, peer: number, m: DescMsg): void {
    const p = this.peers.get(peer)!;
    if (p.bye) return;
    st.pendingSends++;
    this.sent++;
    const done = (err?: Error) => {
      if (err && !p.bye && !this.closed) return this.lost(peer, `cannot be reached on a direct link (${err.message})`, false);
      this.parts.ops.sent(st);
      this.host.maybeComplete(st);
    };
    if (p.link) p.link.sendControl(m, done);
    else p.queued.push([m, done]);
  }

  /** A link a lower rank opened to this one. */
  private arrived(peer: number, link: Link): void {
    if (!this.peers.has(peer) || peer > this.host.rank) {
      link.close();
      return this.host.protocol(peer, `opened a direct link to rank ${this.host.rank}, which exchanges nothing with it that way`);
    }
    this.up(peer, link);
  }

  private up(peer: number, link: Link): void {
    const p = this.peers.get(peer)!;
    if (this.closed) return link.close();
    p.link = link;
    const guard = this.host.guard;
    link.setHandlers(<LinkHandlers<LinkControlMessage>>{
      data: guard(peer, () => this.host.protocol(peer, 'sent a data frame on a direct link')),
      control: guard(peer, (m: LinkControlMessage) => this.onControl(peer, m)),
      closed: (e) => this.onClosed(peer, e),
    });
    if (this.refd) link.ref();
    else link.unref();
    if (this.parts.poller.polling) link.setPolling?.(true);
    const queued = p.queued.splice(0);
    for (const [m, done] of queued) link.sendControl(m, done);
  }

  private onControl(peer: number, m: LinkControlMessage): void {
    this.parts.poller.progress();
    if (m.t === 'bye') {
      if (m.rank !== peer) return this.host.protocol(peer, `said goodbye as rank ${m.rank}`);
      this.peers.get(peer)!.bye = true;
      return;
    }
    if (m.t !== 'desc') return this.host.protocol(peer, `sent a '${m.t}' message on a direct link`);
    const { rank, size } = this.host;
    const want = expectedFrom(rank, peer, size, this.radix);
    if (!want || !inRun(want, m.origin, size)) {
      const may = want ? `only ranks ${want.first}..${mod(want.first + want.count - 1, size)}'s` : 'none';
      return this.host.protocol(peer, `sent rank ${m.origin}'s descriptor for #${m.seq} on a direct link, where it passes ${may}`);
    }
    this.descriptor(m, peer);
  }

  /** A descriptor `sender` may pass on this link (see onControl): checked as any (agreement.ts), then into its operation's table. */
  private descriptor(m: DescMsg, sender: number): void {
    const { host, parts } = this;
    const checked = checkDescriptorMessage(m, sender, '(direct link)', host.size, host.rank, parts.ops.nextSeq);
    if ('problem' in checked && checked.malformed && host.closing()) return;
    if ('problem' in checked) return this.host.protocol(sender, checked.problem);
    if (host.broken() || parts.ops.isPast(m.seq)) return;
    const st = parts.ops.state(m.seq);
    if (st.table.came(m.origin, 'direct')) return this.host.protocol(sender, `sent rank ${m.origin}'s descriptor for #${m.seq} twice`);
    host.accept(st, m.origin, checked.d, m.p, 'direct', sender);
  }

  private onClosed(peer: number, error: Error | undefined): void {
    if (this.closed) return;
    if (error instanceof RingProtocolError) return this.host.protocol(peer, `(direct link) broke the protocol: ${error.message}`);
    // Its goodbye came first: it has sent all it will and needs nothing more (the ring names a
    // rank that shut down before an operation others still run).
    if (this.peers.get(peer)!.bye) return;
    this.lost(peer, `is gone (${error?.message ?? 'connection closed'})`, true);
  }

  /** Says goodbye on every open link (resolves once the goodbyes have left). */
  bye(): Promise<void> {
    const sent: Promise<void>[] = [];
    this.each((l) => sent.push(new Promise<void>((res) => l.sendControl({ t: 'bye', rank: this.host.rank }, () => res()))));
    return Promise.all(sent).then(() => {});
  }

  /** Closes every link, and any that opens later. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.each((l) => l.close());
    for (const p of this.peers.values()) p.queued.length = 0;
  }
}

/**
 * Whether a world of `size` ranks on `hosts` host keys takes the direct route for small
 * operations. 'auto': with at least 3 ranks (2 ranks are one hop either way) spread over more
 * than one host. On one host the ring's hops go through shared-memory mailboxes and cost a few
 * microseconds, and four ranks of one host on two cores measured 820-895 us direct against
 * 690-710 us around the ring (every rank runnable at once instead of one hop after another);
 * between emulated hosts direct took 0.70-0.85x the ring's time in 4 of 5 pairs of runs (see
 * docs/PERFORMANCE.md).
 */
export function smallOpsRoute(setting: SmallOps, size: number, hosts: number): 'ring' | 'direct' {
  if (size < 2 || setting === 'ring') return 'ring';
  if (setting === 'direct') return 'direct';
  return size >= 3 && hosts > 1 ? 'direct' : 'ring';
}
