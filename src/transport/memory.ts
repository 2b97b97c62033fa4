import { RingRendezvousError, RingShutdownError } from '../errors.js';
import { MessageLink, type Link } from './link.js';
import { Arrivals, checkChannel, type Mesh } from './mesh.js';

/**
 * In-process links for tests: the same encoding as the WebSocket transport, delivered with
 * setImmediate so that sends, receives and reductions interleave as they would over sockets.
 */
class MemoryLink extends MessageLink {
  other!: MemoryLink;

  protected write(parts: Uint8Array[], done: (err?: Error) => void): void {
    if (this.isClosed) {
      queueMicrotask(() => done(new Error(`${this.describe} is closed`)));
      return;
    }
    // Copy now, as a socket write would: the sender may reuse its buffer once `done` runs.
    const msg = Buffer.concat(parts);
    setImmediate(() => {
      this.other.deliver(msg);
      done();
    });
  }
  deliver(msg: Uint8Array): void {
    this.receive(msg);
  }
  protected closeTransport(): void {
    setImmediate(() => this.other.ended(new Error('connection closed by the peer')));
  }
  ref(): void {}
  unref(): void {}
}

/** A connected pair: a.peer === rankB, b.peer === rankA. */
export function memoryLinkPair(rankA: number, rankB: number): [Link, Link] {
  const a = new MemoryLink(rankB, `rank ${rankB} (memory link)`);
  const b = new MemoryLink(rankA, `rank ${rankA} (memory link)`);
  a.other = b;
  b.other = a;
  return [a, b];
}

/** `n` meshes of in-process links, one per rank (see Mesh): createLocalGroups' 'memory' transport. */
export function memoryMeshes(n: number): Mesh[] {
  const meshes: MemoryMesh[] = [];
  for (let r = 0; r < n; r++) meshes.push(new MemoryMesh(r, n, meshes));
  return meshes;
}

class MemoryMesh implements Mesh {
  private readonly arrivals: Arrivals;
  private readonly links = new Set<Link>();

  constructor(
    readonly rank: number,
    readonly size: number,
    private readonly all: MemoryMesh[],
  ) {
    this.arrivals = new Arrivals(rank, size);
  }

  connect(peer: number, channel: string): Promise<Link> {
    checkChannel(channel);
    if (this.arrivals.isClosed) return Promise.reject(new RingShutdownError(`rank ${this.rank}: the mesh is closed`));
    const other = this.all[peer];
    const why = other ? other.arrivals.admit(this.rank, channel) : `rank ${peer} is not another rank of this job`;
    if (why) return Promise.reject(new RingRendezvousError(`rank ${this.rank}: cannot open a link to rank ${peer} on '${channel}': ${why}`));
    const [mine, theirs] = memoryLinkPair(this.rank, peer);
    this.links.add(mine);
    other.links.add(theirs);
    return new Promise((resolve) =>
      setImmediate(() => {
        other.arrivals.arrived(this.rank, channel, theirs);
        resolve(mine);
      }),
    );
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
