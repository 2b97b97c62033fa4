import type { WebSocket } from 'ws';

/**
 * The one persistent 'message' listener of a WebSocket. Messages are queued until someone takes
 * them — one at a time during a handshake (`next`), then all of them (`drain`) — so that nothing
 * the peer sends right after its last handshake message can fall between two listeners.
 */
export class Inbox {
  private queue: Array<{ data: Buffer; binary: boolean }> = [];
  private waiter: ((m: { data: Buffer; binary: boolean } | undefined) => void) | undefined;
  private sink: ((data: Buffer, binary: boolean) => void) | undefined;
  private ended = false;
  /** How the socket ended: the close code the peer sent (1006: none), and an error ws reported. */
  closeCode: number | undefined;
  error: Error | undefined;

  constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, binary: boolean) => {
      if (this.sink) return this.sink(data, binary);
      const w = this.waiter;
      if (w) {
        this.waiter = undefined;
        w({ data, binary });
      } else this.queue.push({ data, binary });
    });
    const end = () => {
      this.ended = true;
      const w = this.waiter;
      this.waiter = undefined;
      w?.(undefined);
    };
    ws.once('close', (code: number) => {
      this.closeCode = code;
      end();
    });
    ws.once('error', (e: Error) => {
      this.error = e;
      end();
    });
  }

  /** The next message, or undefined if the socket ended first / the time ran out. */
  next(timeoutMs: number): Promise<{ data: Buffer; binary: boolean } | 'timeout' | undefined> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve('timeout');
      }, timeoutMs);
      this.waiter = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
    });
  }

  /** From now on every message (queued ones first) goes to `sink`. */
  drain(sink: (data: Buffer, binary: boolean) => void): void {
    this.sink = sink;
    const q = this.queue;
    this.queue = [];
    for (const m of q) sink(m.data, m.binary);
  }

  get socket(): WebSocket {
    return this.ws;
  }
}
