import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OP_INIT, OP_PUSH, OP_WEIGHTS, PS_PROTOCOL, validateToWorker, type ToWorker } from '../src/ps/messages.js';
import { ParameterServer } from '../src/ps/server.js';
import type { Logger } from '../src/logger.js';
import type { Link } from '../src/transport/link.js';
import { memoryLinkPair } from '../src/transport/memory.js';
import type { DataHeader } from '../src/transport/wire.js';

/**
 * One parameter server in this process, its workers on in-memory links speaking the protocol by
 * hand: exact values (integer data, SGD with learning rate 1), and hostile input. Each bad request
 * gets a typed error naming the field, the sender's link is closed, and the server goes on serving
 * the good worker, whose weights stay exact.
 */
const warnings: string[] = [];
const logger: Logger = { warn: (m) => warnings.push(m), info: () => {} };

class RawWorker {
  readonly control: ToWorker[] = [];
  readonly frames: Array<{ h: DataHeader; values: number[] }> = [];
  closed = false;
  private wake: (() => void) | undefined;
  readonly link: Link;

  constructor(server: ParameterServer, readonly rank: number) {
    const [mine, theirs] = memoryLinkPair(rank, 0);
    this.link = mine;
    mine.setHandlers({
      validate: (m: Record<string, unknown>, from: string) => validateToWorker(m, from),
      control: (m: ToWorker) => {
        this.control.push(m);
        this.wake?.();
      },
      data: (h: DataHeader, p: Uint8Array) => this.frames.push({ h, values: Array.from(new Float32Array(new Uint8Array(p).buffer)) }),
      closed: () => {
        this.closed = true;
        this.wake?.();
      },
    });
    server.attach(rank, theirs);
  }

  hello(mode = 'async', extra: Record<string, unknown> = {}) {
    this.link.sendControl({ t: 'hello', protocol: PS_PROTOCOL, rank: this.rank, size: 2, mode, staleness: 2, codec: 'none', keys: [0, 1], lens: [4, 3], ...extra });
  }

  push(key: number, step: number, values: number[], op = OP_PUSH) {
    this.link.sendData({ seq: key, step, chunk: op, codec: 0, scale: 1 }, new Uint8Array(Float32Array.from(values).buffer), () => {});
  }

  /** The next control message (waits for it), or 'closed'. */
  async next(): Promise<ToWorker | 'closed'> {
    for (;;) {
      const m = this.control.shift();
      if (m) return m;
      if (this.closed) return 'closed';
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  /** The weights of the last pull, by key. */
  weights(): Record<number, number[]> {
    const out: Record<number, number[]> = {};
    for (const f of this.frames.splice(0)) if (f.h.chunk === OP_WEIGHTS) out[f.h.seq] = f.values;
    return out;
  }
}

describe('a parameter server, in one process', () => {
  let server: ParameterServer;
  let good: RawWorker;

  beforeAll(async () => {
    await tf.setBackend('cpu');
    server = new ParameterServer({ server: 0, servers: 1, tf: tf as never, logger });
    good = new RawWorker(server, 0);
    good.hello();
    good.link.sendControl({ t: 'init', className: 'SGD', config: { learningRate: 1 } });
    good.push(0, 0, [0, 0, 0, 0], OP_INIT);
    good.push(1, 0, [10, 20, 30], OP_INIT);
    expect(await good.next()).toEqual({ t: 'ready', step: 0 });
  });
  afterAll(() => server.close());

  it('applies pushes exactly and answers pulls with the weights (integer values, SGD lr 1)', async () => {
    good.push(0, 0, [1, 2, 3, 4]);
    good.push(1, 0, [5, 6, 7]);
    good.link.sendControl({ t: 'pull', step: 0 });
    expect(await good.next()).toMatchObject({ t: 'pulled', step: 0 });
    expect(good.weights()).toEqual({ 0: [-1, -2, -3, -4], 1: [5, 14, 23] });
  });

  const bad: Array<[string, (w: RawWorker) => void, string, RegExp]> = [
    ['a wrong shape', (w) => w.push(0, 0, [1, 2, 3]), 'RING_ERR_PROTOCOL', /rank 1 sent 3 values for key 0 of 4 \(a wrong shape\)/],
    ['an unknown key', (w) => w.push(9, 0, [1]), 'RING_ERR_PROTOCOL', /for key 9, which this server does not hold/],
    ['a step from the future', (w) => w.push(0, 5, [1, 1, 1, 1]), 'RING_ERR_PROTOCOL', /a push for step 5 from the future: its next step is 0/],
    ['an unknown operation', (w) => w.push(0, 0, [1, 1, 1, 1], 7), 'RING_ERR_PROTOCOL', /of unknown op 7/],
    ['a malformed message', (w) => w.link.sendControl({ t: 'pull', step: -1 }), 'RING_ERR_PROTOCOL', /malformed 'pull' message .*step -1/],
    ['an unknown message', (w) => w.link.sendControl({ t: 'gimme' }), 'RING_ERR_PROTOCOL', /unexpected message 'gimme'/],
    ['a learning rate that is not a number', (w) => w.link.sendControl({ t: 'lr', value: 'fast' }), 'RING_ERR_PROTOCOL', /malformed 'lr' message .*value 'fast'/],
    ['a pull before pushing', (w) => w.link.sendControl({ t: 'pull', step: 0 }), 'RING_ERR_PROTOCOL', /after pushing 0 of the 2 chunks/],
    ['initial weights from rank 1', (w) => w.push(0, 0, [1, 1, 1, 1], OP_INIT), 'RING_ERR_PROTOCOL', /initial-weights frame .* out of turn/],
  ];
  it.each(bad)('%s: a typed error to that worker, its link closed', async (_what, act, code, message) => {
    const w = new RawWorker(server, 1);
    w.hello();
    expect(await w.next()).toEqual({ t: 'ready', step: 0 });
    act(w);
    const e = await w.next();
    expect(e).toMatchObject({ t: 'error', error: { code, details: { server: 0 } } });
    expect((e as { error: { message: string } }).error.message).toMatch(message);
    expect(await w.next()).toBe('closed');
  });

  it('a hello that disagrees with the job: RING_ERR_MISMATCH naming the option', async () => {
    const w = new RawWorker(server, 1);
    w.hello('sync');
    const e = await w.next();
    expect(e).toMatchObject({ t: 'error', error: { code: 'RING_ERR_MISMATCH', details: { field: 'parameterServer.mode' } } });
    const w2 = new RawWorker(server, 1);
    w2.hello('async', { lens: [4, 4] });
    expect(await w2.next()).toMatchObject({ t: 'error', error: { code: 'RING_ERR_MISMATCH', details: { field: 'model (chunks of this server)' } } });
  });

  it('the good worker was served throughout, its weights still exact', async () => {
    good.push(0, 1, [1, 1, 1, 1]);
    good.push(1, 1, [-5, -14, -23]);
    good.link.sendControl({ t: 'pull', step: 1 });
    expect(await good.next()).toMatchObject({ t: 'pulled', step: 1 });
    expect(good.weights()).toEqual({ 0: [-2, -3, -4, -5], 1: [10, 28, 46] });
    expect(warnings.filter((m) => m.includes('refusing rank 1')).length).toBe(bad.length + 2);
    expect(warnings.some((m) => m.includes('refusing rank 0') || m.includes('lost rank 0'))).toBe(false);
  });

  it("an 'lr' message: the server's optimizer steps with the new rate from the next update", async () => {
    good.link.sendControl({ t: 'lr', value: 2 });
    good.push(0, 2, [1, 1, 1, 1]);
    good.push(1, 2, [1, 2, 3]);
    good.link.sendControl({ t: 'pull', step: 2 });
    expect(await good.next()).toMatchObject({ t: 'pulled', step: 2 });
    expect(good.weights()).toEqual({ 0: [-4, -5, -6, -7], 1: [8, 24, 40] });
  });
});

describe("the servers' SGD", () => {
  it('is bit-identical to tfjs SGD (its reference), over steps, learning rates and magnitudes', async () => {
    const { ChunkWeights } = await import('../src/ps/weights.js');
    let x = 12345;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 10 ** Math.floor(((x % 13) - 6));
    for (const lr of [0.5, 0.1, 1e-3, 3.7]) {
      const fast = new ChunkWeights(tf as never, 7, { className: 'SGD', config: { learningRate: lr } });
      const ref = new ChunkWeights(tf as never, 8, { className: 'SGD', config: { learningRate: lr } }, true);
      const init = Float32Array.from({ length: 1001 }, rnd);
      fast.create(0, init);
      ref.create(0, init);
      for (let step = 0; step < 5; step++) {
        const g = Float32Array.from({ length: 1001 }, rnd);
        fast.apply(0, g);
        ref.apply(0, g);
      }
      expect(Array.from(fast.read(0))).toEqual(Array.from(ref.read(0)));
      fast.dispose();
      ref.dispose();
    }
  });
});

describe('a server whose rank 0 never initialises it', () => {
  it('tells the waiting workers why instead of leaving them to their timeout', async () => {
    await tf.setBackend('cpu');
    const server = new ParameterServer({ server: 0, servers: 1, tf: tf as never, logger });
    const w1 = new RawWorker(server, 1);
    w1.hello();
    const w0 = new RawWorker(server, 0);
    w0.hello();
    await new Promise((r) => setTimeout(r, 10));
    w0.link.close(); // gone after its hello, before 'init'
    const e = await w1.next();
    expect(e).toMatchObject({ t: 'error', error: { code: 'RING_ERR_PEER_LOST', details: { server: 0, ranks: [0] } } });
    expect((e as { error: { message: string } }).error.message).toMatch(/worker rank 0 left before it sent the initial weights/);
    server.close();
  });

  it('a worker whose hello comes after the server gave up is refused too, not left waiting (seen: a hang under load)', async () => {
    await tf.setBackend('cpu');
    const server = new ParameterServer({ server: 0, servers: 1, tf: tf as never, logger });
    const w0 = new RawWorker(server, 0);
    w0.hello();
    await new Promise((r) => setTimeout(r, 10));
    w0.link.close(); // rank 0 gone before 'init', nobody waiting yet
    await new Promise((r) => setTimeout(r, 10));
    const late = new RawWorker(server, 1);
    late.hello();
    const e = await late.next();
    expect(e).toMatchObject({ t: 'error', error: { code: 'RING_ERR_PEER_LOST', details: { server: 0, ranks: [0] } } });
    server.close();
  });
});
