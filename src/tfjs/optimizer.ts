import type * as TfCore from '@tensorflow/tfjs-core';
import { engine, size as worldSize } from '../api.js';
import type { GroupOptions, NamedData } from '../engine/client.js';
import { RingInvalidArgError } from '../errors.js';
import { ProcessGroup } from '../group.js';
import { needTf } from './tf.js';
import { checkParameterServer, ParameterServerPath, type ParameterServerOptions, type ParameterServerStats } from '../ps/worker-side.js';

type Tensor = TfCore.Tensor;
type NamedTensor = { name: string; tensor: Tensor };
type NamedTensorMap = Record<string, Tensor>;

export interface DistributedOptimizerOptions {
  /** Reduction of the gradients across ranks: 'average' (default) or 'sum'. */
  op?: 'average' | 'sum';
  /** Wire compression of the gradients: 'none' (default), 'fp16' or 'bf16' (float32 accumulation). */
  compression?: 'none' | 'fp16' | 'bf16';
  /** Accumulate this many local backward passes (summed) before one reduction and update. Default 1. */
  backwardPassesPerStep?: number;
  /** With backwardPassesPerStep > 1: divide the accumulated gradients by it. Default false (as Horovod). */
  averageAggregatedGradients?: boolean;
  /** Divide gradients by this before the sum and multiply after (Horovod's gradient_predivide_factor). Default 1. */
  gradientPredivideFactor?: number;
  /** Prefix of the tensor names used to match gradients across ranks (default: 'opt<k>/', k = construction order). */
  name?: string;
  /**
   * Reduce over this process set (from newGroup) instead of the world, as Horovod's
   * `process_set`: only its members construct the optimizer, and 'average' divides by its size.
   * Data x pipeline parallelism uses it to average a stage's gradients with the same stage of the
   * other pipelines (see pipelineGroups).
   */
  group?: ProcessGroup;
  /**
   * Keep the weights on parameter servers instead of reducing over the ring (ringrun --servers S):
   * the servers run the inner optimizer's class and config, workers push gradients (in
   * `compression`'s format) and pull weights. See README "Parameter servers".
   */
  parameterServer?: ParameterServerOptions;
}

/** The tfjs Optimizer interface that DistributedOptimizer implements (and wraps). */
export interface DistributedOptimizer extends TfCore.Optimizer {
  readonly inner: TfCore.Optimizer;
  /** The process set the gradients are reduced over (undefined: the world). */
  readonly group: ProcessGroup | undefined;
  applyGradientsAsync(variableGradients: NamedTensorMap | NamedTensor[]): Promise<void>;
  minimizeAsync(f: () => TfCore.Scalar, returnCost?: boolean, varList?: TfCore.Variable[]): Promise<TfCore.Scalar | null>;
  /**
   * With parameterServer: these variables (default: every trainable one) take the servers' current
   * weights (worker 0's initial ones, or a restored checkpoint's). Call it on every worker before
   * the first step (rr.callbacks.pullServerWeights() does, for model.fit).
   */
  pullServerWeights(variables?: TfCore.Variable[]): Promise<void>;
  /** With parameterServer: every server writes its state (weights, optimizer state, step) to `dir` on its host. */
  saveServerState(dir: string): Promise<void>;
  /** With parameterServer: this worker's steps and the staleness their updates had. */
  parameterServerStats(): ParameterServerStats;
}

interface Impl {
  new (inner: TfCore.Optimizer, options?: DistributedOptimizerOptions): DistributedOptimizer;
}

let impl: Impl | undefined;
let instances = 0;

function check(options: DistributedOptimizerOptions) {
  if (options === null || typeof options !== 'object') throw new RingInvalidArgError('DistributedOptimizer: options must be an object');
  const op = options.op ?? 'average';
  if (op !== 'average' && op !== 'sum') throw new RingInvalidArgError(`DistributedOptimizer: options.op must be 'average' or 'sum', got ${JSON.stringify(op)}`);
  const compression = options.compression ?? 'none';
  if (!['none', 'fp16', 'bf16'].includes(compression)) {
    throw new RingInvalidArgError(`DistributedOptimizer: options.compression must be 'none', 'fp16' or 'bf16', got ${JSON.stringify(compression)}`);
  }
  const k = options.backwardPassesPerStep ?? 1;
  if (!Number.isSafeInteger(k) || k < 1) throw new RingInvalidArgError(`DistributedOptimizer: options.backwardPassesPerStep must be an integer >= 1, got ${k}`);
  const f = options.gradientPredivideFactor ?? 1;
  if (typeof f !== 'number' || !(f > 0) || !Number.isFinite(f)) {
    throw new RingInvalidArgError(`DistributedOptimizer: options.gradientPredivideFactor must be a positive number, got ${f}`);
  }
  if (options.name !== undefined && typeof options.name !== 'string') throw new RingInvalidArgError('DistributedOptimizer: options.name must be a string');
  if (options.group !== undefined && !(options.group instanceof ProcessGroup)) {
    // newGroup gives non-members null: the usual way to get here is constructing it on every rank.
    throw new RingInvalidArgError(
      `DistributedOptimizer: options.group must be a ProcessGroup from newGroup() (only its members construct the optimizer; newGroup gives the others null), got ${options.group === null ? 'null' : typeof options.group}`,
      { op: 'DistributedOptimizer' },
    );
  }
  const ps = options.parameterServer === undefined ? undefined : checkParameterServer(options.parameterServer);
  if (ps && (options.group !== undefined || op !== 'average' || f !== 1)) {
    const which = options.group !== undefined ? 'group' : op !== 'average' ? "op 'sum'" : 'gradientPredivideFactor';
    throw new RingInvalidArgError(`DistributedOptimizer: options.parameterServer does not combine with options.${which}: the servers average the workers' gradients`);
  }
  return { op, compression, k, f, averageAggregated: options.averageAggregatedGradients === true, group: options.group, ps };
}

/**
 * The class is defined on first use, as a subclass of the application's own tf.Optimizer, so
 * that importing ringreduce never loads TensorFlow.js.
 */
function define(): Impl {
  const tf = needTf('DistributedOptimizer');

  class DistributedOptimizerImpl extends tf.Optimizer implements DistributedOptimizer {
    static className = 'DistributedOptimizer';
    readonly inner: TfCore.Optimizer;
    readonly group: ProcessGroup | undefined;
    private readonly o: ReturnType<typeof check>;
    private readonly prefix: string;
    private readonly options: DistributedOptimizerOptions;
    private accumulated: NamedTensorMap | undefined;
    private passes = 0;
    private readonly ps: ParameterServerPath | undefined;

    constructor(inner: TfCore.Optimizer, options: DistributedOptimizerOptions = {}) {
      super();
      if (!(inner instanceof tf.Optimizer)) {
        throw new RingInvalidArgError('DistributedOptimizer: the first argument must be a tfjs optimizer, e.g. tf.train.adam(1e-3)');
      }
      this.inner = inner;
      this.options = options;
      this.o = check(options);
      this.group = this.o.group;
      this.prefix = options.name ?? `opt${instances++}/`;
      if (this.o.ps) this.ps = new ParameterServerPath(tf, inner, this.o.ps, this.o.compression as 'none' | 'fp16' | 'bf16');
    }

    private needPs(fn: string): ParameterServerPath {
      if (!this.ps) throw new RingInvalidArgError(`DistributedOptimizer.${fn}: this optimizer has no options.parameterServer`);
      return this.ps;
    }

    async pullServerWeights(variables?: TfCore.Variable[]): Promise<void> {
      const vars = variables ?? Object.values(tf.engine().registeredVariables).filter((v) => v.trainable);
      return this.needPs('pullServerWeights').pull(vars);
    }

    async saveServerState(dir: string): Promise<void> {
      return this.needPs('saveServerState').save(dir);
    }

    parameterServerStats(): ParameterServerStats {
      return this.needPs('parameterServerStats').stats();
    }

    /** The parameter-server step: the servers update, the variables get their weights. */
    private viaServers(s: { l: NamedTensor[]; owned: boolean }, run: (l: NamedTensor[]) => void | Promise<void>): void | Promise<void> {
      const end = () => {
        if (s.owned) tf.dispose(s.l.map((g) => g.tensor));
      };
      let r;
      try {
        r = run(s.l);
      } catch (e) {
        end();
        throw e;
      }
      if (r) return r.finally(end);
      end();
    }

    private list(vg: NamedTensorMap | NamedTensor[]): NamedTensor[] {
      const l = Array.isArray(vg) ? vg : Object.keys(vg).map((name) => ({ name, tensor: vg[name] }));
      for (const g of l) {
        if (g.tensor == null) continue;
        if (g.tensor.dtype !== 'float32') {
          throw new RingInvalidArgError(`DistributedOptimizer: gradient '${g.name}' is ${g.tensor.dtype}; only float32 gradients are supported`);
        }
      }
      return l.filter((g) => g.tensor != null);
    }

    /** Local accumulation over backwardPassesPerStep calls: returns the gradients to reduce, or undefined. */
    private accumulate(l: NamedTensor[]): NamedTensor[] | undefined {
      if (this.o.k === 1) return l;
      const prev = this.accumulated;
      this.accumulated = {};
      for (const g of l) {
        const sum = prev?.[g.name] ? tf.add(prev[g.name], g.tensor) : tf.clone(g.tensor);
        this.accumulated[g.name] = tf.keep(sum);
      }
      if (prev) tf.dispose(Object.values(prev));
      if (++this.passes < this.o.k) return undefined;
      const acc = this.accumulated;
      this.accumulated = undefined;
      this.passes = 0;
      return Object.keys(acc).map((name) => ({
        name,
        tensor: this.o.averageAggregated ? tf.tidy(() => tf.div(acc[name], this.o.k)) : acc[name],
      }));
    }

    private request(l: NamedTensor[]): { data: NamedData[]; opts: GroupOptions } {
      const data = l.map((g) => ({ name: this.prefix + g.name, shape: g.tensor.shape, data: g.tensor.dataSync() as Float32Array }));
      const scope = this.group?.scope;
      if (this.o.f === 1) return { data, opts: { op: this.o.op, compression: this.o.compression, prescale: 1, postscale: 1, scope } };
      // Horovod's gradient_predivide_factor: sum of (g / f), then * f / N for average, * f for sum.
      const post = this.o.op === 'average' ? this.o.f / this.ranks() : this.o.f;
      return { data, opts: { op: 'sum', compression: this.o.compression, prescale: 1 / this.o.f, postscale: post, scope } };
    }

    private ranks(): number {
      return this.group ? this.group.size() : worldSize();
    }

    /** The comm worker, unless the gradients stay on this rank (a world or process set of one). */
    private engine(fn: string) {
      const eng = engine(fn);
      return this.ranks() === 1 ? undefined : eng;
    }

    private apply(l: NamedTensor[], reduced: Float32Array[], owned: boolean): void {
      const tensors = reduced.map((r, i) => tf.tensor(r, l[i].tensor.shape, 'float32'));
      try {
        this.inner.applyGradients(l.map((g, i) => ({ name: g.name, tensor: tensors[i] })));
      } finally {
        tf.dispose(tensors);
        if (owned) tf.dispose(l.map((g) => g.tensor));
      }
    }

    /** Size-1 jobs (and the scaling) without a comm worker. */
    private local(r: { data: NamedData[]; opts: GroupOptions }): Float32Array[] {
      const s = r.opts.prescale * r.opts.postscale;
      return r.data.map((d) => (s === 1 ? d.data : d.data.map((v) => Math.fround(Math.fround(v * r.opts.prescale) * r.opts.postscale))));
    }

    /** What a step reduces (undefined while accumulating), and whether its tensors are ours to dispose. */
    private step(variableGradients: NamedTensorMap | NamedTensor[]) {
      const all = this.list(variableGradients);
      const l = this.accumulate(all);
      return l && { l, owned: l !== all, r: this.request(l) };
    }

    applyGradients(variableGradients: NamedTensorMap | NamedTensor[]): void {
      const s = this.step(variableGradients);
      if (!s) return;
      if (this.ps) return void this.viaServers(s, (l) => this.ps!.applySync(l));
      const eng = this.engine('DistributedOptimizer.applyGradients');
      this.apply(s.l, eng ? eng.reduceSync(s.r.data, s.r.opts) : this.local(s.r), s.owned);
    }

    async applyGradientsAsync(variableGradients: NamedTensorMap | NamedTensor[]): Promise<void> {
      const s = this.step(variableGradients);
      if (!s) return;
      if (this.ps) return this.viaServers(s, (l) => this.ps!.apply(l));
      const eng = this.engine('DistributedOptimizer.applyGradientsAsync');
      this.apply(s.l, eng ? await eng.reduce(s.r.data, s.r.opts) : this.local(s.r), s.owned);
    }

    async minimizeAsync(f: () => TfCore.Scalar, returnCost = false, varList?: TfCore.Variable[]): Promise<TfCore.Scalar | null> {
      const { value, grads } = this.computeGradients(f, varList);
      try {
        await this.applyGradientsAsync(varList ? varList.map((v) => ({ name: v.name, tensor: grads[v.name] })) : grads);
      } finally {
        tf.dispose(grads);
      }
      if (returnCost) return value;
      value.dispose();
      return null;
    }

    override dispose(): void {
      if (this.accumulated) tf.dispose(Object.values(this.accumulated));
      this.inner.dispose();
      super.dispose();
    }
    override async getWeights() {
      return this.inner.getWeights();
    }
    override async setWeights(weightValues: NamedTensor[]) {
      return this.inner.setWeights(weightValues);
    }
    override get iterations(): number {
      return this.inner.iterations;
    }
    getConfig(): TfCore.serialization.ConfigDict {
      // A process set belongs to a running job: a saved config cannot carry it.
      const { group: _group, ...options } = this.options;
      return {
        inner: { className: this.inner.getClassName(), config: this.inner.getConfig() },
        options: options as TfCore.serialization.ConfigDict,
      };
    }
    static override fromConfig<T extends TfCore.serialization.Serializable>(
      cls: TfCore.serialization.SerializableConstructor<T>,
      config: TfCore.serialization.ConfigDict,
    ): T {
      const innerSpec = config.inner as { className: string; config: TfCore.serialization.ConfigDict };
      const registry = tf.serialization.SerializationMap.getMap().classNameMap;
      const entry = registry[innerSpec.className];
      if (!entry) throw new RingInvalidArgError(`DistributedOptimizer.fromConfig: unknown optimizer class '${innerSpec.className}'`);
      const [innerCls, fromConfig] = entry;
      const inner = fromConfig(innerCls, innerSpec.config) as unknown as TfCore.Optimizer;
      return new cls(inner as never, config.options as never);
    }
  }
  tf.serialization.registerClass(DistributedOptimizerImpl as never);
  return DistributedOptimizerImpl as unknown as Impl;
}

/**
 * Wraps any tfjs optimizer so that each gradient update is averaged (or summed) across ranks
 * before the inner optimizer applies it. `applyGradients` (what `model.fit` and `minimize` call)
 * blocks until the ring has reduced the step's gradients; `applyGradientsAsync` / `minimizeAsync`
 * do the same without blocking, for custom loops.
 */
export const DistributedOptimizer = function DistributedOptimizer(
  this: unknown,
  inner: TfCore.Optimizer,
  options?: DistributedOptimizerOptions,
): DistributedOptimizer {
  if (!new.target) throw new TypeError("Class constructor DistributedOptimizer cannot be invoked without 'new'");
  impl ??= define();
  return new impl(inner, options);
} as unknown as Impl;

// By prototype chain: `x instanceof impl` would be tf.Optimizer's own Symbol.hasInstance (a duck
// type that every tfjs optimizer passes), inherited by the subclass.
Object.defineProperty(DistributedOptimizer, Symbol.hasInstance, {
  value: (x: unknown) => impl !== undefined && typeof x === 'object' && x !== null && Object.prototype.isPrototypeOf.call(impl.prototype, x),
});
