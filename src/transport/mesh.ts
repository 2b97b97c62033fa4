import { RingError, RingInvalidArgError, RingProtocolError, RingRendezvousError, RingShutdownError, RingTimeoutError } from '../errors.js';
import { peerValue } from '../peer-text.js';
import type { Logger } from '../logger.js';
import type { Link } from './link.js';
import { takeReserveWarning } from './shm/region.js';
import type { Acceptor, PeerAddress, Transport } from './transport.js';

/**
 * Links to any rank, made on first use (Gloo's full-mesh context, made lazily). A link belongs to
 * a channel ('p2p', or one per process group) and a direction: the rank that `connect`s is the
 * one that SENDS data on it (it offers the shared memory, when the peer shares its host); the
 * peer `accept`s it and receives. Control messages go both ways (acknowledgements, credits).
 *
 * One implementation, LinkMesh below, over any Transport (WebSocket: the rank table's addresses,
 * the job token's handshake, TLS, same-host shared memory; or in-process links for tests).
 */
export interface Mesh {
  readonly rank: number;
  readonly size: number;
  /**
   * A new link to `peer` on `channel`, opened by this rank (the sending side). `slots`: the shared
   * memory it offers (default maxInflight slots of chunkBytes; a link that carries only control
   * messages needs just the region's mailboxes, so one small slot).
   */
  connect(peer: number, channel: string, slots?: SlotShape): Promise<Link>;
  /** The link `peer` opens to this rank on `channel`: at once if it already arrived, else when it does. */
  accept(peer: number, channel: string, timeoutMs: number): Promise<Link>;
  /** Every link any peer opens on `channel` goes to `handler` (instead of waiting for accept()). */
  serve(channel: string, handler: (peer: number, link: Link) => void): void;
  /** The process id of `peer`, where known (see PeerAddress). */
  pidOf?(peer: number): number | undefined;
  /** Closes every link of the mesh; later calls reject. */
  close(): Promise<void>;
}

/** Shared-memory slots a link offers: how many, of how many bytes. */
export interface SlotShape {
  count: number;
  bytes: number;
}

/** Channel names travel in the connection's URL and its MAC: short, plain. */
export const CHANNEL_RE = /^[a-z0-9][a-z0-9._:-]{0,63}$/i;

/**
 * The bookkeeping every mesh shares: links that arrived before anyone asked for them (bounded: an
 * authenticated peer cannot make a rank hold more than a few per rank), waiters, served channels.
 */
export class Arrivals {
  private readonly parked = new Map<string, Link>();
  private readonly waiters = new Map<string, (l: Link | Error) => void>();
  private readonly handlers = new Map<string, (peer: number, link: Link) => void>();
  private readonly seen = new Set<string>();
  private closed = false;

  constructor(
    private readonly rank: number,
    private readonly size: number,
    /** At most this many unclaimed links are held (beyond: the connection is refused). */
    private readonly maxParked = 4 * size + 16,
  ) {}

  /** Why `peer` may not open a link on `channel` here, or undefined if it may. */
  admit(peer: number, channel: string): string | undefined {
    if (this.closed) return `rank ${this.rank} is shutting down`;
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.size || peer === this.rank) return `rank ${peer} is not another rank of this job`;
    if (!CHANNEL_RE.test(channel)) return `bad channel name ${peerValue(channel)}`;
    if (this.seen.has(key(peer, channel))) return `rank ${peer} already has a link to rank ${this.rank} on channel '${channel}'`;
    if (!this.handlers.has(channel) && !this.waiters.has(key(peer, channel)) && this.parked.size >= this.maxParked) {
      return `rank ${this.rank} holds ${this.parked.size} links nobody asked for`;
    }
    return undefined;
  }

  /** A link that passed admit() and its handshake. */
  arrived(peer: number, channel: string, link: Link): void {
    const k = key(peer, channel);
    this.seen.add(k);
    if (this.closed) return link.close();
    const h = this.handlers.get(channel);
    if (h) return h(peer, link);
    const w = this.waiters.get(k);
    if (w) {
      this.waiters.delete(k);
      return w(link);
    }
    this.parked.set(k, link);
  }

  accept(peer: number, channel: string, timeoutMs: number, what: string): Promise<Link> {
    const k = key(peer, channel);
    if (this.closed) return Promise.reject(new RingShutdownError(`rank ${this.rank}: the mesh is closed`));
    const early = this.parked.get(k);
    if (early) {
      this.parked.delete(k);
      return Promise.resolve(early);
    }
    if (this.waiters.has(k)) return Promise.reject(new RingInvalidArgError(`rank ${this.rank}: already waiting for rank ${peer} on '${channel}'`));
    return new Promise<Link>((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.waiters.delete(k);
              reject(new RingTimeoutError(`rank ${this.rank}: rank ${peer} did not open its link for ${what} within ${timeoutMs} ms`, {
                rank: this.rank,
                ranks: [peer],
              }));
            }, timeoutMs)
          : undefined;
      this.waiters.set(k, (l) => {
        clearTimeout(timer);
        if (l instanceof Error) reject(l);
        else resolve(l);
      });
    });
  }

  serve(channel: string, handler: (peer: number, link: Link) => void): void {
    this.handlers.set(channel, handler);
    for (const [k, link] of [...this.parked]) {
      const [p, c] = split(k);
      if (c !== channel) continue;
      this.parked.delete(k);
      handler(p, link);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.parked.values()) l.close();
    this.parked.clear();
    const err = new RingShutdownError(`rank ${this.rank}: shutdown() called while waiting for a link`);
    for (const w of this.waiters.values()) w(err);
    this.waiters.clear();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

const key = (peer: number, channel: string) => `${peer}|${channel}`;
const split = (k: string): [number, string] => {
  const i = k.indexOf('|');
  return [Number(k.slice(0, i)), k.slice(i + 1)];
};

/** Throws the error a bad channel name deserves (a bug in ringreduce: names are made inside). */
export function checkChannel(channel: string): void {
  if (!CHANNEL_RE.test(channel)) throw new RingProtocolError(`bad channel name ${peerValue(channel)}`);
}

export interface LinkMeshOptions {
  sharedMemory: boolean;
  /** Shared slots per link (frames in flight), and their size. */
  maxInflight: number;
  chunkBytes: number;
  /** How long opening a link may take (connection retries, handshake, shared-memory set-up). */
  startTimeoutMs: number;
  logger: Logger;
  /** Say per link whether its payloads go through shared memory or the socket (RINGREDUCE_VERBOSE). */
  verbose?: boolean;
}

/**
 * The mesh over a transport: it is the transport's Acceptor (admission, arrivals), opens links with
 * it, and sets up shared memory on every mesh link (the side that connects sends, so it offers).
 * The ring's own links (channel 'ring') use the same port and handshake; rendezvous/ring.ts opens
 * them with open() and pairs their shared memory itself, because the ring's data flows from the
 * accepting side (an older convention that the wire keeps).
 */
export class LinkMesh implements Mesh, Acceptor {
  private readonly arrivals: Arrivals;
  private readonly links = new Set<Link>();
  private readonly rules = new Map<string, { admit(peer: number): string | undefined; label(peer: number): string }>();
  private addresses: PeerAddress[] | undefined;

  constructor(
    readonly rank: number,
    readonly size: number,
    private readonly transport: Transport,
    private readonly o: LinkMeshOptions,
  ) {
    this.arrivals = new Arrivals(rank, size);
  }

  /** The peers' addresses, once the rendezvous has read them. */
  setAddresses(addresses: PeerAddress[]): void {
    this.addresses = addresses;
  }

  pidOf(peer: number): number | undefined {
    return this.addresses?.[peer]?.pid;
  }

  /** Admission and naming of one channel's peers beyond the mesh's own rules (the ring's neighbours). */
  restrict(channel: string, rule: { admit(peer: number): string | undefined; label(peer: number): string }): void {
    this.rules.set(channel, rule);
  }

  admit(peer: number, channel: string): string | undefined {
    return this.rules.get(channel)?.admit(peer) ?? this.arrivals.admit(peer, channel);
  }

  label(peer: number, channel: string): string {
    return this.rules.get(channel)?.label(peer) ?? `${channel} link`;
  }

  /**
   * Why links to `peer` must keep their payloads on the socket, or undefined when they may try
   * shared memory: it is disabled here, or the peer's host key differs from this rank's (another
   * host; network namespaces of one machine count as hosts, although they share /dev/shm).
   */
  noSharedMemory(peer: number): string | undefined {
    if (!this.o.sharedMemory) return 'shared memory is disabled on this rank';
    if (this.addresses?.[peer]?.sameHost === false) return `rank ${peer} is on another host: boot id or network namespace differ`;
    return undefined;
  }

  /** With --verbose: which way the payloads of this rank's link to or from `peer` go. */
  sayPath(peer: number, what: string, why: string | undefined): void {
    if (this.o.verbose) this.o.logger.info(pathLine(this.rank, peer, what, why));
  }

  accepted(peer: number, channel: string, link: Link): void {
    this.track(link);
    if (!this.rules.has(channel) && link.acceptSharedMemory) {
      const off = this.noSharedMemory(peer);
      link.acceptSharedMemory(off === undefined, this.o.chunkBytes, Math.max(1000, this.o.startTimeoutMs)).then(
        (why) => this.sayPath(peer, `${channel} link from`, off ?? why),
        (e: Error) => {
          this.o.logger.warn(`rank ${this.rank}: shared-memory set-up with rank ${peer} failed: ${e.message}`);
          link.close();
        },
      );
    }
    this.arrivals.arrived(peer, channel, link);
  }

  /** A link to `peer` on `channel`, without shared memory (see the class comment). */
  async open(peer: number, channel: string, deadline: number, label = this.label(peer, channel)): Promise<Link> {
    checkChannel(channel);
    if (this.arrivals.isClosed) throw new RingShutdownError(`rank ${this.rank}: the mesh is closed`);
    const at = this.addresses?.[peer];
    if (!at || peer === this.rank) throw new RingRendezvousError(`rank ${this.rank}: no address for rank ${peer}`, { rank: this.rank, ranks: [peer] });
    try {
      return this.track(await this.transport.connect(peer, at, channel, deadline, label));
    } catch (e) {
      if (e instanceof RingError) throw e;
      throw new RingRendezvousError(`rank ${this.rank}: cannot open a link to rank ${peer} on '${channel}': ${(e as Error).message}`, {
        rank: this.rank,
        ranks: [peer],
      });
    }
  }

  async connect(peer: number, channel: string, slots: SlotShape = { count: this.o.maxInflight, bytes: this.o.chunkBytes }): Promise<Link> {
    const deadline = Date.now() + this.o.startTimeoutMs;
    const link = await this.open(peer, channel, deadline);
    if (link.offerSharedMemory) {
      const off = this.noSharedMemory(peer);
      const why = await link.offerSharedMemory(off === undefined, slots.count, slots.bytes, Math.max(1000, deadline - Date.now()));
      this.sayPath(peer, `${channel} link to`, off ?? why);
    }
    const full = takeReserveWarning();
    if (full) this.o.logger.warn(`rank ${this.rank}: ${full}: payloads from this rank to ranks on this host go through sockets`);
    return link;
  }

  private track(link: Link): Link {
    this.links.add(link);
    if (this.arrivals.isClosed) link.close();
    return link;
  }

  accept(peer: number, channel: string, timeoutMs: number): Promise<Link> {
    return this.arrivals.accept(peer, channel, timeoutMs, `channel '${channel}'`);
  }

  serve(channel: string, handler: (peer: number, link: Link) => void): void {
    this.arrivals.serve(channel, handler);
  }

  async close(): Promise<void> {
    this.arrivals.close();
    for (const l of this.links) l.close();
    this.links.clear();
  }
}

/**
 * The --verbose line for one link, e.g. "rank 1: ring link to rank 2: payloads through the socket
 * (rank 2 is on another host: ...)". `what` names the link and its direction ("p2p link to").
 */
export function pathLine(rank: number, peer: number, what: string, why: string | undefined): string {
  return `rank ${rank}: ${what} rank ${peer}: payloads through ${why === undefined ? 'shared memory' : `the socket (${why})`}`;
}
