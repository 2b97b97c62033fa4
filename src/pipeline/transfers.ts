import type { StageComm } from './comm.js';
import { transferTag } from './comm.js';

/**
 * The point-to-point traffic of one round (a training step or a predict call) of one stage.
 * Receives are posted ahead of the compute that needs them (`post`), sends are never awaited by
 * the compute (a send resolves only once the peer's receive took it, and the peer may be busy
 * sending to us: awaiting would deadlock the two), and the first failure of either rejects
 * whatever the stage waits for next, at once.
 */
export class Transfers {
  private readonly sends: Promise<void>[] = [];
  private readonly posted = new Map<string, Promise<Float32Array>>();
  private readonly failure: Promise<never>;
  private fail!: (e: unknown) => void;
  private error: unknown;

  constructor(
    private readonly comm: StageComm,
    private readonly round: number,
  ) {
    this.failure = new Promise<never>((_, reject) => (this.fail = reject));
    this.failure.catch(() => {});
  }

  private failed = (e: unknown): void => {
    if (this.error === undefined) this.error = e;
    this.fail(e);
  };

  send(data: Float32Array, peer: number, mb: number, dir: 'act' | 'grad'): void {
    this.sends.push(this.comm.send(data, peer, transferTag(this.round, mb, dir)).catch(this.failed));
  }

  /** Posts the receive of (peer, mb, dir) into a new array of `length`, unless it is posted already. */
  post(peer: number, mb: number, dir: 'act' | 'grad', length: number): void {
    const key = `${dir}:${mb}`;
    if (this.posted.has(key)) return;
    const p = this.comm.recv(new Float32Array(length), peer, transferTag(this.round, mb, dir));
    p.catch(this.failed);
    this.posted.set(key, p);
  }

  /** The data of (peer, mb, dir): posts its receive if needed and waits for it (or the first failure). */
  async take(peer: number, mb: number, dir: 'act' | 'grad', length: number): Promise<Float32Array> {
    this.post(peer, mb, dir, length);
    const key = `${dir}:${mb}`;
    const p = this.posted.get(key)!;
    this.posted.delete(key);
    return Promise.race([p, this.failure]);
  }

  /** Waits for every send of the round; throws the round's first failure. */
  async finish(): Promise<void> {
    await Promise.race([Promise.all(this.sends), this.failure]);
    if (this.error !== undefined) throw this.error;
  }
}
