import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { deserializeError, RingError, RingInternalError, RingRendezvousError, RingShutdownError, RingTimeoutError } from '../errors.js';
import { describeErrno, isFdExhaustion } from '../transport/fds.js';
import type { EngineOptions, FromWorker, GroupEntry, ToWorker } from './messages.js';
import { byName, type GroupMeta } from './plan.js';
import type { PsSetup, StepInfo } from '../ps/client.js';

export interface NamedData {
  name: string;
  shape: number[];
  data: Float32Array;
}

export interface GroupOptions {
  op: 'sum' | 'average';
  compression: string;
  prescale: number;
  postscale: number;
  /** Reduce over this process set (ProcessGroup.scope) instead of the world. */
  scope?: { id: string; members: number[] };
}

/** The compiled worker next to this module; under vitest (TypeScript sources) the built one. */
function workerUrl(): URL {
  const here = new URL('./worker.js', import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  return new URL('../../dist/engine/worker.js', import.meta.url);
}

/**
 * The worker is started from a line of code that imports its file, not from the file itself: a
 * worker inherits this process's options, and with `node --input-type=module -e '...'` Node
 * refused a file as the worker's entry point (ERR_INPUT_TYPE_NOT_ALLOWED: --input-type is for
 * string input), so init() failed. Passing a filtered execArgv instead is no way out: Node then
 * refuses the process-wide options a user may have, such as --expose-gc. An import() works as
 * CommonJS and as a module, whatever --input-type says.
 */
export function workerSource(url: URL = workerUrl()): string {
  return `import(${JSON.stringify(url.href)});`;
}

/**
 * The main thread's handle on the comm worker. Gradients go to the worker in a
 * SharedArrayBuffer; `reduceSync` blocks in Atomics.wait until the worker has reduced them in
 * place (what tfjs' synchronous Optimizer.applyGradients needs), `reduce` returns a Promise.
 */
export class Engine {
  private readonly worker: Worker;
  private readonly syncPort: MessagePort;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(reply?: Extract<FromWorker, { type: 'done' }>): void; reject(e: Error): void }>();
  private readonly ready: Promise<void>;
  private isReady = false;
  private fatal: RingError | undefined;
  private closed = false;

  constructor(private readonly options: EngineOptions) {
    this.worker = new Worker(workerSource(), { eval: true });
    const { port1, port2 } = new MessageChannel();
    this.syncPort = port1;
    this.worker.postMessage({ type: 'syncPort', port: port2 }, [port2]);
    this.ready = new Promise((resolve, reject) => {
      this.worker.on('message', (m: FromWorker) => {
        if (m.type === 'ready') {
          this.isReady = true;
          this.idle();
          resolve();
        } else if (m.type === 'fatal') {
          this.fatal = deserializeError(m.error);
          reject(this.fatal);
          for (const w of this.waiting.values()) w.reject(this.fatal);
          this.waiting.clear();
        } else if (m.type === 'done') {
          const w = this.waiting.get(m.id);
          this.waiting.delete(m.id);
          if (m.error) w?.reject(deserializeError(m.error));
          else w?.resolve(m);
          this.idle();
        }
      });
      this.worker.on('error', (e) => {
        // Out of file descriptors, a worker cannot even load its modules: not a bug of ours.
        this.fatal = isFdExhaustion(e)
          ? new RingRendezvousError(`rank ${options.rank}: the comm thread failed: ${describeErrno(e)}`, { rank: options.rank })
          : new RingInternalError(`the comm worker crashed: ${e.stack ?? e.message}`);
        reject(this.fatal);
      });
    });
    this.ready.catch(() => {});
    this.worker.postMessage({ type: 'init', options } satisfies ToWorker);
  }

  private idle(): void {
    if (this.waiting.size === 0) this.worker.unref();
  }

  /** Packs the tensors (sorted by name) into one shared buffer and posts it to the worker. */
  private submit(tensors: NamedData[], o: GroupOptions, sync: boolean) {
    const sorted = [...tensors].sort(byName);
    const total = sorted.reduce((s, t) => s + t.data.length, 0);
    const buffer = new SharedArrayBuffer(total * 4);
    const all = new Float32Array(buffer);
    const entries: GroupEntry[] = [];
    let offset = 0;
    for (const t of sorted) {
      all.set(t.data, offset);
      entries.push({ name: t.name, shape: t.shape, offset: offset * 4, count: t.data.length });
      offset += t.data.length;
    }
    const { scope, ...reduction } = o;
    const meta: GroupMeta = { tensors: sorted.map((t) => ({ name: t.name, shape: t.shape })), ...reduction };
    const { id, control } = this.post((id, control) => ({ type: 'group', id, buffer, control, entries, meta, sync, scope }));
    const results = new Map(entries.map((e) => [e.name, new Float32Array(buffer, e.offset, e.count)]));
    return { id, control, results: tensors.map((t) => results.get(t.name)!) };
  }

  /** Reduces the tensors across ranks; blocks this thread until done. Results are in input order. */
  reduceSync(tensors: NamedData[], o: GroupOptions): Float32Array[] {
    const { id, control, results } = this.submit(tensors, o, true);
    this.waitSync(id, control, 'gradient reduction');
    return results;
  }

  /**
   * Blocks in Atomics.wait until the worker has answered request `id` (its reply is on the sync
   * port); throws its error. Returns the reply.
   */
  private waitSync(id: number, control: Int32Array, what: string): Extract<FromWorker, { type: 'done' }> | undefined {
    // The worker finishes ring formation in the background too; one deadline bounds both.
    const limit = this.options.timeoutMs > 0 ? this.options.timeoutMs + this.options.startTimeoutMs + 5000 : Infinity;
    const t0 = Date.now();
    while (Atomics.load(control, 0) === 0) {
      const left = limit - (Date.now() - t0);
      if (left <= 0) {
        this.idle();
        throw new RingTimeoutError(`rank ${this.options.rank}: ${what} #${id} got no answer from the comm worker within ${limit} ms`, {
          rank: this.options.rank,
        });
      }
      Atomics.wait(control, 0, 0, Math.min(left, 1000));
    }
    // The worker posts its reply before it wakes us: it is on the port already.
    let reply: FromWorker | undefined;
    for (let m = receiveMessageOnPort(this.syncPort); m; m = receiveMessageOnPort(this.syncPort)) {
      const msg = m.message as FromWorker;
      if (msg.type === 'done' && msg.id === id) reply = msg;
    }
    if (!reply && Atomics.load(control, 0) === 2) {
      // An error reply may have been posted from a path that woke us first; give it a moment.
      const until = Date.now() + 1000;
      while (!reply && Date.now() < until) {
        const m = receiveMessageOnPort(this.syncPort);
        if (m && (m.message as FromWorker).type === 'done' && (m.message as { id: number }).id === id) reply = m.message as FromWorker;
        else if (!m) Atomics.wait(control, 0, 2, 5);
      }
    }
    this.idle();
    if (reply?.type === 'done' && reply.error) throw deserializeError(reply.error);
    if (Atomics.load(control, 0) !== 1) throw this.fatal ?? new RingInternalError(`${what} #${id} failed without an error`);
    return reply?.type === 'done' ? reply : undefined;
  }

  /** Posts a request that is answered by a 'done' carrying its id. */
  private post(make: (id: number, control: SharedArrayBuffer) => ToWorker): { id: number; control: Int32Array } {
    if (this.fatal) throw this.fatal;
    if (this.closed) throw new RingShutdownError(`rank ${this.options.rank}: the comm engine is shut down`);
    const control = new SharedArrayBuffer(4);
    const id = this.nextId++;
    this.worker.ref();
    this.worker.postMessage(make(id, control));
    return { id, control: new Int32Array(control) };
  }

  /**
   * A parameter-server step (see ps/client.ts): the gradients in `buffer` go to the servers and
   * their weights come back into it. `sync` blocks this thread (tfjs' applyGradients).
   */
  psStepSync(buffer: SharedArrayBuffer, setup: (PsSetup & { initial: SharedArrayBuffer }) | undefined, lr?: number): StepInfo | undefined {
    const { id, control } = this.post((id, control) => ({ type: 'ps', id, buffer, control, sync: true, setup, ...(lr !== undefined && { lr }) }));
    return this.waitSync(id, control, 'parameter-server step')?.ps;
  }

  async psStep(buffer: SharedArrayBuffer, setup: (PsSetup & { initial: SharedArrayBuffer }) | undefined, fetch = false, lr?: number): Promise<StepInfo | undefined> {
    const { id } = this.post((id, control) => ({ type: 'ps', id, buffer, control, sync: false, setup, fetch, ...(lr !== undefined && { lr }) }));
    return (await this.answer(id))?.ps;
  }

  async psSave(dir: string): Promise<void> {
    const { id } = this.post((id, control) => ({ type: 'ps-save', id, control, sync: false, dir }));
    await this.answer(id);
  }

  async reduce(tensors: NamedData[], o: GroupOptions): Promise<Float32Array[]> {
    const { id, results } = this.submit(tensors, o, false);
    await this.answer(id);
    return results;
  }

  /** The worker's 'done' for request `id`, asynchronously (its error rejects). */
  private answer(id: number): Promise<Extract<FromWorker, { type: 'done' }> | undefined> {
    return new Promise((resolve, reject) => this.waiting.set(id, { resolve, reject }));
  }

  async whenReady(): Promise<void> {
    await this.ready;
  }

  get started(): boolean {
    return this.isReady;
  }

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.worker.ref();
    const closed = new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 3000);
      this.worker.on('message', (m: FromWorker) => {
        if (m.type === 'closed') {
          clearTimeout(t);
          resolve();
        }
      });
    });
    this.worker.postMessage({ type: 'shutdown' } satisfies ToWorker);
    await closed;
    await this.worker.terminate();
  }
}
