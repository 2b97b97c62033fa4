import type { IncomingMessage } from 'node:http';
import type { WebSocket } from 'ws';
import { RingError, RingRendezvousError, RingShutdownError } from '../errors.js';
import type { ResolvedOptions } from '../options.js';
import { clientHandshake, serverHandshake } from '../transport/auth.js';
import { Inbox } from '../transport/inbox.js';
import type { Link } from '../transport/link.js';
import { Arrivals, checkChannel, type Mesh } from '../transport/mesh.js';
import { refuse } from '../transport/refusals.js';
import { DATA_HEADER_BYTES } from '../transport/wire.js';
import { channelPath, connect, WsLink } from '../transport/ws.js';

const HANDSHAKE_MS = 10_000;

/** The MAC names the channel too: a connection cannot be replayed onto another channel. */
const serverId = (rank: number, channel: string) => (channel === 'ring' ? `rank:${rank}` : `rank:${rank}/${channel}`);

/** Where a rank listens, from its rendezvous record. */
export interface PeerAddress {
  host: string;
  port: number;
}

/**
 * The WebSocket mesh: links to any rank of the job through the addresses of the rendezvous table,
 * on the port each rank's ring already listens on, with the same job-token handshake, TLS, and
 * shared memory for the payloads when the peer is on this host. Nothing is opened until asked.
 */
export class WsMesh implements Mesh {
  readonly arrivals: Arrivals;
  private readonly links = new Set<Link>();
  private table: PeerAddress[] | undefined;

  constructor(
    readonly rank: number,
    readonly size: number,
    private readonly o: ResolvedOptions,
  ) {
    this.arrivals = new Arrivals(rank, size);
  }

  /** The peers' addresses, once the rendezvous has read them. */
  setTable(table: PeerAddress[]): void {
    this.table = table;
  }

  private get maxPayload(): number {
    return this.o.chunkBytes + DATA_HEADER_BYTES + 4096;
  }

  async connect(peer: number, channel: string): Promise<Link> {
    checkChannel(channel);
    if (this.arrivals.isClosed) throw new RingShutdownError(`rank ${this.rank}: the mesh is closed`);
    const rec = this.table?.[peer];
    if (!rec || peer === this.rank) throw new RingRendezvousError(`rank ${this.rank}: no address for rank ${peer}`, { rank: this.rank, ranks: [peer] });
    const where = `${rec.host}:${rec.port}`;
    const what = `rank ${peer}`;
    try {
      const deadline = Date.now() + this.o.startTimeoutMs;
      const inbox = await connect(rec, this.maxPayload, deadline, what, this.o.tls, channelPath(channel));
      try {
        await clientHandshake(inbox, { token: this.o.token, rank: this.rank, serverId: serverId(peer, channel), timeoutMs: HANDSHAKE_MS, peer: `${what} at ${where}` });
      } catch (e) {
        inbox.socket.terminate();
        throw e;
      }
      const link = new WsLink(peer, `rank ${peer} (${channel} link, ${where})`, inbox);
      this.track(link);
      // This side sends on the link: it offers the shared memory (see Mesh).
      await link.offerSharedMemory(this.o.sharedMemory, this.o.maxInflight, this.o.chunkBytes, Math.max(1000, deadline - Date.now()));
      return link;
    } catch (e) {
      if (e instanceof RingError) throw e;
      throw new RingRendezvousError(`rank ${this.rank}: cannot open a link to rank ${peer} on '${channel}': ${(e as Error).message}`, {
        rank: this.rank,
        ranks: [peer],
      });
    }
  }

  /** A connection on a mesh channel (the ring's listener hands it over): handshake, then the link. */
  handle(ws: WebSocket, req: IncomingMessage, channel: string): void {
    const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const inbox = new Inbox(ws);
    serverHandshake(inbox, {
      token: this.o.token,
      serverId: serverId(this.rank, channel),
      challenge: { rank: this.rank, role: 'rank' },
      admit: (r) => this.arrivals.admit(r, channel),
      timeoutMs: HANDSHAKE_MS,
      peer: `connection from ${peer}`,
    }).then(
      (r) => {
        const link = new WsLink(r, `rank ${r} (${channel} link, ${peer})`, inbox);
        this.track(link);
        link.acceptSharedMemory(this.o.sharedMemory, this.o.chunkBytes, Math.max(1000, this.o.startTimeoutMs)).catch((e: Error) => {
          this.o.logger.warn(`rank ${this.rank}: shared-memory set-up with rank ${r} failed: ${e.message}`);
          link.close();
        });
        this.arrivals.arrived(r, channel, link);
      },
      (e: Error) => {
        this.o.logger.warn(`rank ${this.rank}: refused a connection from ${peer}: ${e.message}`);
        refuse(ws, 1008, 'refused');
      },
    );
  }

  private track(link: WsLink): void {
    this.links.add(link);
    if (this.arrivals.isClosed) link.close();
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
