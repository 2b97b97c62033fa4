import { codecFor } from '../compression/registry.js';
import type { StoreAddress } from '../env.js';
import { deserializeError, RingError, RingMismatchError, RingPeerLostError, RingProtocolError, RingRendezvousError, RingShutdownError, RingTimeoutError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Link } from '../transport/link.js';
import { DATA_HEADER_BYTES, type DataHeader } from '../transport/wire.js';
import type { TlsConfig } from '../transport/ws/socket.js';
import { WsTransport } from '../transport/ws/transport.js';
import { withDeadline } from '../deadline.js';
import { frameText, OP_INIT, OP_PUSH, OP_WEIGHTS, PS_CHANNEL, PS_PROTOCOL, validateToWorker, type PsCodec, type PsMode, type ToWorker } from './messages.js';
import { chunksOf, partition, type Chunk, type Partition } from './partition.js';
import { findServers, openStore } from './rendezvous.js';

/**
 * A worker's side of the parameter-server protocol (messages.ts), run on the comm thread
 * (engine/worker.ts) so that tfjs' synchronous applyGradients can block on it. It works on one
 * float32 buffer holding the model's tensors in name order (the partition's order): a step pushes
 * the gradients found there, chunk by chunk, to the servers holding them, and the weights pulled
 * back overwrite the buffer in place.
 */
export interface PsSetup {
  /** The tensors, in name order: as the step buffer holds them. */
  tensors: Array<{ name: string; size: number }>;
  mode: PsMode;
  staleness: number;
  compression: PsCodec;
  restore?: string;
  optimizer: { className: string; config: Record<string, unknown> };
}

export interface PsClientOptions {
  rank: number;
  size: number;
  token: string;
  tls?: TlsConfig;
  store: StoreAddress;
  psServers: number;
  chunkBytes: number;
  startTimeoutMs: number;
  timeoutMs: number;
  logger: Logger;
}

export interface StepInfo {
  /** The step just done, and the staleness and lag its update had (the most over the servers: see server.ts). */
  step: number;
  staleness: number;
  lag: number;
  /** Worker steps the servers have applied in all (the least over the servers). */
  total: number;
}

interface Server {
  k: number;
  link: Link;
  where: string;
  chunks: Chunk[];
  byKey: Map<number, Chunk>;
}

/** What a request waits for: one answer per server. */
interface Waiting {
  what: string;
  left: Set<number>;
  resolve(): void;
  reject(e: Error): void;
}

export class PsClient {
  private servers: Server[] = [];
  private failed: RingError | undefined;
  private waiting: Waiting | undefined;
  private readyStep = new Map<number, number>();
  private staleness = 0;
  private lag = 0;
  private total = 0;
  private buffer: Float32Array | undefined;
  private nextSave = 1;
  private closing = false;
  private step = 0;
  private readonly offsets: number[];
  private readonly part: Partition;
  private readonly codec: number;

  private constructor(
    private readonly o: PsClientOptions,
    private readonly setup: PsSetup,
  ) {
    // One chunk fits a data frame: of fp32 values, or twice as many 16-bit ones.
    this.part = partition(setup.tensors, { servers: o.psServers, maxChunkElements: Math.max(1, Math.floor(o.chunkBytes / 4)) });
    this.offsets = [];
    let at = 0;
    for (const t of this.part.tensors) {
      this.offsets.push(at);
      at += t.size;
    }
    this.codec = setup.compression === 'none' ? 0 : codecFor(setup.compression)!.code;
  }

  /** Finds the servers, links to each, says hello (rank 0: the optimizer and `initial` weights) and waits until all are ready. */
  static async connect(o: PsClientOptions, setup: PsSetup, initial: Float32Array): Promise<PsClient> {
    const c = new PsClient(o, setup);
    await c.open(initial);
    return c;
  }

  private async open(initial: Float32Array): Promise<void> {
    const { o, setup } = this;
    const deadline = Date.now() + o.startTimeoutMs;
    const store = await openStore(o.store, o.token, o.rank, deadline, o.tls);
    let records;
    try {
      records = await findServers(store, o.psServers, o.rank, Math.max(0, deadline - Date.now()));
    } finally {
      store.close();
    }
    const transport = new WsTransport({ rank: o.rank, token: o.token, host: '', maxPayload: o.chunkBytes + DATA_HEADER_BYTES + 4096, tls: o.tls, logger: o.logger });
    this.servers = await Promise.all(
      records.map(async (r) => {
        const where = `${r.host}:${r.port}`;
        let link: Link;
        try {
          link = await transport.connect(r.server, { host: r.host, port: r.port }, PS_CHANNEL, deadline, `parameter server ${r.server}`);
        } catch (e) {
          throw new RingRendezvousError(`rank ${o.rank}: cannot link to parameter server ${r.server} at ${where}: ${(e as Error).message}`, { rank: o.rank, server: r.server });
        }
        const chunks = chunksOf(this.part, r.server);
        return { k: r.server, link, where, chunks, byKey: new Map(chunks.map((c) => [c.key, c])) };
      }),
    );
    for (const s of this.servers) this.listen(s);
    const ready = this.expect('readiness');
    for (const s of this.servers) {
      s.link.sendControl({
        t: 'hello',
        protocol: PS_PROTOCOL,
        rank: o.rank,
        size: o.size,
        mode: setup.mode,
        staleness: setup.staleness,
        codec: setup.compression,
        keys: s.chunks.map((c) => c.key),
        lens: s.chunks.map((c) => c.length),
        ...(o.rank === 0 && setup.restore && { restore: setup.restore }),
      });
      if (o.rank !== 0) continue;
      s.link.sendControl({ t: 'init', ...setup.optimizer });
      if (setup.restore) continue;
      for (const c of s.chunks) this.sendChunk(s, c, initial, OP_INIT, 0);
    }
    // Rank 0 may reach its first step long after the others: the operation timeout, not the start's.
    await this.within(ready, o.timeoutMs);
    const steps = new Set(this.readyStep.values());
    if (steps.size > 1) {
      throw this.fail(new RingMismatchError(`rank ${o.rank}: the parameter servers resume at different steps (${[...this.readyStep].map(([k, s]) => `server ${k}: ${s}`).join(', ')}): their checkpoints do not belong together`, { rank: o.rank, field: 'restore' }));
    }
    this.step = [...steps][0] ?? 0;
  }

  private listen(s: Server): void {
    s.link.setHandlers({
      validate: (m: Record<string, unknown>, from: string) => validateToWorker(m, from),
      control: (m: ToWorker) => this.onControl(s, m),
      data: (h: DataHeader, payload: Uint8Array) => this.onData(s, h, payload),
      closed: (error: Error | undefined) => {
        if (this.closing) return;
        this.fail(
          new RingPeerLostError(`rank ${this.o.rank}: parameter server ${s.k} (${s.where}) is gone${this.waiting ? ` while waiting for its ${this.waiting.what}` : ''}: ${error?.message ?? 'its link closed'}`, {
            rank: this.o.rank,
            server: s.k,
            op: 'parameterServer',
          }),
        );
      },
    });
  }

  private onControl(s: Server, m: ToWorker): void {
    if (m.t === 'error') {
      const e = deserializeError(m.error);
      e.details.server ??= s.k;
      this.fail(e);
      return;
    }
    const w = this.waiting;
    if (m.t === 'ready') this.readyStep.set(s.k, m.step);
    else if (m.t === 'pulled') {
      if (m.step !== this.step) return void this.fail(this.bad(s, `'pulled' for step ${m.step} while step ${this.step} waits`));
      this.staleness = Math.max(this.staleness, m.staleness);
      this.lag = Math.max(this.lag, m.lag);
      this.total = Math.min(this.total, m.total);
    }
    if (!w || !w.left.delete(s.k)) return void this.fail(this.bad(s, `an unexpected '${m.t}'`));
    if (w.left.size === 0) {
      this.waiting = undefined;
      w.resolve();
    }
  }

  private onData(s: Server, h: DataHeader, payload: Uint8Array): void {
    const c = s.byKey.get(h.seq);
    const buf = this.buffer;
    if (h.chunk !== OP_WEIGHTS || !c || !buf || h.codec !== 0 || payload.byteLength !== c.length * 4) {
      return void this.fail(this.bad(s, `an unexpected ${frameText(h)} of ${payload.byteLength} bytes`));
    }
    const at = this.offsets[c.tensor] + c.offset;
    new Uint8Array(buf.buffer, buf.byteOffset + at * 4, c.length * 4).set(payload);
  }

  private bad(s: Server, what: string): RingProtocolError {
    return new RingProtocolError(`rank ${this.o.rank}: parameter server ${s.k} (${s.where}) sent ${what}`, { rank: this.o.rank, server: s.k });
  }

  /** Fails what waits and every later call with `e` (the first failure wins), and closes the links. */
  private fail(e: RingError): RingError {
    if (this.failed) return this.failed;
    this.failed = e;
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(e);
    this.closing = true;
    for (const s of this.servers) s.link.close();
    return e;
  }

  private expect(what: string): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => (this.waiting = { what, left: new Set(this.servers.map((s) => s.k)), resolve, reject }));
  }

  /** `p`, or after `ms` (0: never) the job's failure: a timeout naming the servers that did not answer. */
  private within(p: Promise<void>, ms: number): Promise<void> {
    if (ms <= 0) return p;
    return withDeadline(p, Date.now() + ms, () => {
      const left = [...(this.waiting?.left ?? [])];
      return this.fail(
        new RingTimeoutError(`rank ${this.o.rank}: parameter server${left.length > 1 ? 's' : ''} ${left.join(', ')} did not answer (${this.waiting?.what}) within ${ms} ms`, {
          rank: this.o.rank,
          server: left[0],
          op: 'parameterServer',
        }),
      );
    });
  }

  private sendChunk(s: Server, c: Chunk, from: Float32Array, op: number, codec: number): void {
    const at = this.offsets[c.tensor] + c.offset;
    const values = from.subarray(at, at + c.length);
    const header = { seq: c.key, step: this.step, chunk: op, codec, scale: 1 };
    if (codec === 0) return s.link.sendData(header, new Uint8Array(values.buffer, values.byteOffset, values.byteLength), () => {});
    const wire = new Uint8Array(c.length * 2);
    header.scale = codecFor(this.setup.compression as 'fp16' | 'bf16')!.encode(wire, values);
    s.link.sendData(header, wire, () => {});
  }

  /** Pushes the gradients in `buffer`, pulls the weights into it; `lr`: a new learning rate first (see messages.ts). */
  async push(buffer: Float32Array, lr?: number): Promise<StepInfo> {
    if (this.failed) throw this.failed;
    if (this.closing) throw new RingShutdownError(`rank ${this.o.rank}: the parameter-server client is closed`);
    this.buffer = buffer;
    this.staleness = 0;
    this.lag = 0;
    this.total = Infinity;
    const done = this.expect(`weights of step ${this.step}`);
    for (const s of this.servers) {
      if (lr !== undefined) s.link.sendControl({ t: 'lr', value: lr });
      for (const c of s.chunks) this.sendChunk(s, c, buffer, OP_PUSH, this.codec);
      s.link.sendControl({ t: 'pull', step: this.step });
    }
    await this.within(done, this.o.timeoutMs);
    return { step: this.step++, staleness: this.staleness, lag: this.lag, total: this.total };
  }

  /** The servers' current weights into `buffer`, without a step (a worker's start: see tfjs/optimizer.ts pullServerWeights). */
  async fetch(buffer: Float32Array): Promise<void> {
    if (this.failed) throw this.failed;
    this.buffer = buffer;
    const done = this.expect('current weights');
    for (const s of this.servers) s.link.sendControl({ t: 'fetch' });
    await this.within(done, this.o.timeoutMs);
  }

  /** Every server writes its state to `dir` (on its own host); resolves to the manifests' paths. */
  async save(dir: string): Promise<void> {
    if (this.failed) throw this.failed;
    const done = this.expect(`checkpoint in ${dir}`);
    const id = this.nextSave++;
    for (const s of this.servers) s.link.sendControl({ t: 'save', id, dir });
    await this.within(done, this.o.timeoutMs);
  }

  /** Says goodbye to every server (it pushes nothing more) and closes the links. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await Promise.all(
      this.servers.map((s) => new Promise<void>((resolve) => s.link.sendControl({ t: 'bye' }, () => resolve()))),
    );
    for (const s of this.servers) s.link.close();
  }
}
