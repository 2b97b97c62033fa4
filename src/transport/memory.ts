import { RingRendezvousError } from '../errors.js';
import { MessageLink, type Link } from './link.js';
import type { Acceptor, Listener, PeerAddress, Transport } from './transport.js';

/**
 * In-process links for tests: the same encoding as the WebSocket transport, delivered with
 * setImmediate so that sends, receives and reductions interleave as they would over sockets.
 */
class MemoryLink extends MessageLink {
  other!: MemoryLink;
  /** Messages not yet read while paused (see pause), with their senders' callbacks. */
  private unread: Array<[Uint8Array, () => void]> | undefined;

  protected write(parts: Uint8Array[], done: (err?: Error) => void): void {
    if (this.isClosed) {
      queueMicrotask(() => done(new Error(`${this.describe} is closed`)));
      return;
    }
    // Copy now, as a socket write would: the sender may reuse its buffer once `done` runs.
    const msg = Buffer.concat(parts);
    setImmediate(() => this.other.deliver(msg, () => done()));
  }
  /** A paused receiver keeps the message, and its sender's write "in the socket" (done waits), until it resumes. */
  deliver(msg: Uint8Array, done: () => void): void {
    if (this.unread) return void this.unread.push([msg, done]);
    this.receive(msg);
    done();
  }
  pause(on: boolean): void {
    if (on) {
      this.unread ??= [];
      return;
    }
    const unread = this.unread ?? [];
    this.unread = undefined;
    for (const [m, done] of unread) this.deliver(m, done);
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

/**
 * In-process transports for `n` ranks (createLocalGroups' 'memory' transport): connect() makes a
 * memory link pair and hands the other end to the peer's acceptor, as a socket's accept would.
 */
export function memoryTransports(n: number): Transport[] {
  const acceptors: (Acceptor | undefined)[] = new Array(n).fill(undefined);
  return Array.from({ length: n }, (_, rank) => ({
    async listen(acceptor: Acceptor): Promise<Listener> {
      acceptors[rank] = acceptor;
      return { address: { host: 'memory', port: rank }, close: async () => void (acceptors[rank] = undefined) };
    },
    connect(peer: number, _at: PeerAddress, channel: string): Promise<Link> {
      const other = acceptors[peer];
      const why = other ? other.admit(rank, channel) : `rank ${peer} does not accept links`;
      if (why) return Promise.reject(new RingRendezvousError(`rank ${rank}: rank ${peer} refused a link on '${channel}': ${why}`, { rank, ranks: [peer] }));
      const [mine, theirs] = memoryLinkPair(rank, peer);
      return new Promise((resolve) =>
        setImmediate(() => {
          other!.accepted(rank, channel, theirs);
          resolve(mine);
        }),
      );
    },
  }));
}
