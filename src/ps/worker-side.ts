import type * as TfCore from '@tensorflow/tfjs-core';
import { engine, parameterServers } from '../api.js';
import type { Engine } from '../engine/client.js';
import { byName } from '../engine/plan.js';
import { RingInvalidArgError } from '../errors.js';
import type { PsSetup } from './client.js';
import { PS_MODES, type PsCodec, type PsMode } from './messages.js';

/**
 * DistributedOptimizer's parameter-server path, on the main thread: gradients are packed, in name
 * order, into one shared buffer that the comm thread's client (client.ts) pushes to the servers
 * and fills with the pulled weights, which are then written into the model's variables. The inner
 * optimizer is not run here: the servers run instances of its class and config (server.ts).
 */
export interface ParameterServerOptions {
  /** 'sync' (default): the servers apply the average of all workers' gradients once per step, as the ring. 'async': each push on arrival. 'stale': as async, at most `staleness` steps ahead of the slowest worker. */
  mode?: PsMode;
  /** 'stale' mode's bound, in steps (default 4). */
  staleness?: number;
  /** A directory written by saveServerState: the servers resume from it (read by rank 0's optimizer; absolute). */
  restore?: string;
}

export interface ParameterServerStats {
  mode: PsMode;
  servers: number;
  /** Steps this worker pushed. */
  updates: number;
  /** Staleness of its updates, in steps: how far ahead of the slowest worker it ran (bounded by 'stale'). */
  maxStaleness: number;
  meanStaleness: number;
  /** Lag of its updates: other workers' steps applied between its read of the weights and its update (a straggler's is large in async mode). */
  maxLag: number;
  meanLag: number;
  /**
   * Worker steps the servers had applied in all, as of this worker's last step (every worker's:
   * a job can stop at a global number of updates, as TF's global_step, when workers run at
   * different speeds).
   */
  globalUpdates: number;
}

type NamedTensor = { name: string; tensor: TfCore.Tensor };

export function checkParameterServer(v: unknown): Required<Omit<ParameterServerOptions, 'restore'>> & { restore?: string } {
  if (v === null || typeof v !== 'object') throw new RingInvalidArgError('DistributedOptimizer: options.parameterServer must be an object, e.g. { mode: \'async\' }');
  const o = v as ParameterServerOptions;
  const mode = o.mode ?? 'sync';
  if (!PS_MODES.includes(mode)) throw new RingInvalidArgError(`DistributedOptimizer: options.parameterServer.mode must be 'sync', 'async' or 'stale', got ${JSON.stringify(mode)}`);
  const staleness = o.staleness ?? 4;
  if (!Number.isSafeInteger(staleness) || staleness < 0 || staleness > 1 << 20) {
    throw new RingInvalidArgError(`DistributedOptimizer: options.parameterServer.staleness must be an integer >= 0, got ${JSON.stringify(staleness)}`);
  }
  if (o.restore !== undefined && (typeof o.restore !== 'string' || !o.restore.startsWith('/'))) {
    throw new RingInvalidArgError(`DistributedOptimizer: options.parameterServer.restore must be an absolute directory path, got ${JSON.stringify(o.restore)}`);
  }
  return o.restore === undefined ? { mode, staleness } : { mode, staleness, restore: o.restore };
}

/** One per process: the servers hold one model. */
let taken = false;

export class ParameterServerPath {
  private names: string[] | undefined;
  private shapes: number[][] = [];
  private sizes: number[] = [];
  private buffer: SharedArrayBuffer | undefined;
  private readonly stat = { updates: 0, max: 0, sum: 0, maxLag: 0, sumLag: 0, total: 0 };

  constructor(
    private readonly tf: typeof TfCore,
    private readonly inner: TfCore.Optimizer,
    private readonly o: ReturnType<typeof checkParameterServer>,
    private readonly compression: PsCodec,
  ) {
    if (taken) throw new RingInvalidArgError('DistributedOptimizer: only one optimizer per process may use parameter servers (they hold one model)');
    taken = true;
  }

  private engine(fn: string): Engine {
    const servers = parameterServers(fn);
    if (servers === 0) {
      throw new RingInvalidArgError(
        `${fn}: options.parameterServer needs parameter servers: start the job with ringrun --servers S, or start servers (dist/ps/server-main.js) and set RINGREDUCE_PS_SERVERS=S on every worker`,
        { op: 'parameterServer' },
      );
    }
    return engine(fn)!;
  }

  private variable(name: string): TfCore.Variable {
    const v = this.tf.engine().registeredVariables[name];
    if (!v) throw new RingInvalidArgError(`DistributedOptimizer: gradient '${name}' names no variable: with parameter servers the gradients must be keyed by their variables' names (as model.fit and minimize do)`);
    return v;
  }

  /**
   * Starts from the servers' weights: links to them if this is the first call (rank 0 sending
   * `variables`' values as the initial weights, unless they restore a checkpoint) and writes their
   * current weights into `variables`. Call it before the first step, on every worker (the
   * pullServerWeights callback does, for model.fit), or the first step's gradients of workers
   * other than 0 are computed on their own initial weights.
   */
  async pull(variables: TfCore.Variable[]): Promise<void> {
    const eng = this.engine('pullServerWeights');
    const zeros = variables.map((v) => ({ name: v.name, tensor: v as TfCore.Tensor }));
    const { buffer, setup } = this.pack(zeros, false);
    await eng.psStep(buffer, setup, true);
    this.unpack(undefined);
  }

  /** The step's buffer with the gradients in it, and on the first step the set-up for the comm thread. */
  private pack(l: NamedTensor[], copy = true): { buffer: SharedArrayBuffer; setup?: PsSetup & { initial: SharedArrayBuffer } } {
    const sorted = [...l].sort(byName);
    const first = this.names === undefined;
    if (first) {
      this.names = sorted.map((g) => g.name);
      this.shapes = sorted.map((g) => g.tensor.shape);
      this.sizes = sorted.map((g) => g.tensor.size);
      this.buffer = new SharedArrayBuffer(this.sizes.reduce((a, b) => a + b, 0) * 4);
    } else if (sorted.length !== this.names!.length || sorted.some((g, i) => g.name !== this.names![i] || g.tensor.size !== this.sizes[i])) {
      throw new RingInvalidArgError(
        `DistributedOptimizer: the gradients of this step are of other variables than the first step's (${sorted.map((g) => g.name).join(', ')} vs ${this.names!.join(', ')}): the parameter servers hold the first step's`,
      );
    }
    const all = new Float32Array(this.buffer!);
    let at = 0;
    for (const g of sorted) {
      if (copy) all.set(g.tensor.dataSync() as Float32Array, at);
      at += g.tensor.size;
    }
    if (!first) return { buffer: this.buffer! };
    const initial = new SharedArrayBuffer(this.buffer!.byteLength);
    const init = new Float32Array(initial);
    at = 0;
    for (const name of this.names!) {
      const v = this.variable(name);
      init.set(v.dataSync() as Float32Array, at);
      at += v.size;
    }
    const setup: PsSetup & { initial: SharedArrayBuffer } = {
      tensors: this.names!.map((name, i) => ({ name, size: this.sizes[i] })),
      mode: this.o.mode,
      staleness: this.o.staleness,
      compression: this.compression,
      optimizer: { className: this.inner.getClassName(), config: this.inner.getConfig() as Record<string, unknown> },
      initial,
    };
    if (this.o.restore) setup.restore = this.o.restore;
    this.sentLearningRate = (this.inner as unknown as { learningRate?: number }).learningRate;
    return { buffer: this.buffer!, setup };
  }

  /** The pulled weights, from the buffer into the variables. */
  private unpack(info: { staleness: number; lag: number; total: number } | undefined): void {
    const all = new Float32Array(this.buffer!);
    let at = 0;
    const { tf } = this;
    this.names!.forEach((name, i) => {
      const values = all.slice(at, at + this.sizes[i]);
      at += this.sizes[i];
      tf.tidy(() => this.variable(name).assign(tf.tensor(values, this.shapes[i], 'float32')));
    });
    if (info) {
      this.stat.updates++;
      this.stat.sum += info.staleness;
      this.stat.max = Math.max(this.stat.max, info.staleness);
      this.stat.sumLag += info.lag;
      this.stat.maxLag = Math.max(this.stat.maxLag, info.lag);
      this.stat.total = info.total;
    }
  }

  applySync(l: NamedTensor[]): void {
    const eng = this.engine('DistributedOptimizer.applyGradients');
    const { buffer, setup } = this.pack(l);
    this.unpack(eng.psStepSync(buffer, setup, this.newLearningRate()));
  }

  async apply(l: NamedTensor[]): Promise<void> {
    const eng = this.engine('DistributedOptimizer.applyGradientsAsync');
    const { buffer, setup } = this.pack(l);
    this.unpack(await eng.psStep(buffer, setup, false, this.newLearningRate()));
  }

  /**
   * The inner optimizer's learning rate if it changed since the servers last heard it (a schedule:
   * `sgd.setLearningRate(x)`, `adam.learningRate = x`), else undefined. The set-up (the first
   * step's, or pullServerWeights') carries the config, and so the rate, of that moment.
   */
  private newLearningRate(): number | undefined {
    const lr = (this.inner as unknown as { learningRate?: unknown }).learningRate;
    if (typeof lr !== 'number' || !Number.isFinite(lr) || lr === this.sentLearningRate) return undefined;
    this.sentLearningRate = lr;
    return lr;
  }
  private sentLearningRate: number | undefined;

  async save(dir: string): Promise<void> {
    if (typeof dir !== 'string' || !dir.startsWith('/')) throw new RingInvalidArgError(`saveServerState: dir must be an absolute directory path, got ${JSON.stringify(dir)}`);
    await this.engine('saveServerState').psSave(dir);
  }

  stats(): ParameterServerStats {
    const { updates, max, sum, maxLag, sumLag } = this.stat;
    const mean = (x: number) => (updates ? x / updates : 0);
    return { mode: this.o.mode, servers: parameterServers('parameterServerStats'), updates, maxStaleness: max, meanStaleness: mean(sum), maxLag, meanLag: mean(sumLag), globalUpdates: this.stat.total };
  }
}
