import { MessageLink, type Link } from './link.js';

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
