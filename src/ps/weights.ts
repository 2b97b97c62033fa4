import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as TfCore from '@tensorflow/tfjs-core';
import { RingInvalidArgError, RingMismatchError } from '../errors.js';
import { peerText } from '../peer-text.js';

/**
 * A server's chunks of the model and the optimizer that updates them (BytePS's server-side
 * optimizer): one tfjs variable per chunk and one instance of the workers' optimizer class per
 * chunk. One instance per chunk, not one for all: an optimizer such as Adam advances its step
 * (and bias-correction powers) once per applyGradients call, and chunks are applied one at a
 * time as their gradients complete.
 *
 * Checkpoints: `<dir>/ps-server-<k>.json` (what is where) and `<dir>/ps-server-<k>.bin` (the
 * float32 values: every chunk's weights, then its optimizer's state as getWeights() lists it).
 */
export interface OptimizerSpec {
  className: string;
  config: Record<string, unknown>;
}

/**
 * A chunk: a tfjs variable and its own optimizer instance, or, for plain SGD, its values and
 * an update in JavaScript (see sgdStep).
 */
interface Slot {
  variable?: TfCore.Variable;
  optimizer?: TfCore.Optimizer;
  values?: Float32Array;
  iterations: number;
  length: number;
}

interface Manifest {
  format: 'ringreduce-ps';
  version: 1;
  server: number;
  servers: number;
  clock: number;
  className: string;
  config: Record<string, unknown>;
  chunks: Array<{ key: number; length: number; offset: number; state: Array<{ name: string; shape: number[]; offset: number; count: number }> }>;
}

export const checkpointFiles = (dir: string, server: number) => ({
  manifest: join(dir, `ps-server-${server}.json`),
  data: join(dir, `ps-server-${server}.bin`),
});

/**
 * tfjs's SGD, w + (-lr) * g, computed as its CPU kernels do (the product rounded to float32, then
 * the sum), so the results are bit-identical (test/ps-server.test.ts): on the CPU backend tfjs
 * broadcasts the scalar through a general index loop, measured at ~60 MB/s, which made the
 * servers' optimizer the whole cost of a step on large models.
 */
function sgdStep(w: Float32Array, g: Float32Array, negLr: number): void {
  for (let i = 0; i < w.length; i++) w[i] = Math.fround(negLr * g[i]) + w[i];
}

export class ChunkWeights {
  private readonly slots = new Map<number, Slot>();
  /** -learningRate as a float32, when the optimizer is plain SGD (then sgdStep updates the chunks). */
  private sgd: number | undefined;

  constructor(
    private readonly tf: typeof TfCore,
    private readonly server: number,
    readonly spec: OptimizerSpec,
    /** Always run the tfjs optimizer (the reference the SGD path is tested against). */
    reference = false,
  ) {
    this.newOptimizer().dispose(); // refuse an unknown class now, before any chunk exists
    const lr = spec.config.learningRate;
    const plain = Object.keys(spec.config).every((k) => k === 'learningRate');
    this.sgd = !reference && spec.className === 'SGD' && plain && typeof lr === 'number' && Number.isFinite(lr) ? Math.fround(-lr) : undefined;
  }

  /**
   * The workers' learning rate changed (a schedule on their optimizer): every chunk's optimizer
   * uses it from the next update, and so do those made later and the checkpoint's config. SGD and
   * momentum keep -lr as a tensor (setLearningRate renews it); the others read the field.
   */
  setLearningRate(lr: number): void {
    this.spec.config.learningRate = lr;
    if (this.sgd !== undefined) this.sgd = Math.fround(-lr);
    for (const s of this.slots.values()) {
      const o = s.optimizer as unknown as { learningRate: number; setLearningRate?: (lr: number) => void } | undefined;
      if (!o) continue;
      if (typeof o.setLearningRate === 'function') o.setLearningRate(lr);
      else o.learningRate = lr;
    }
  }

  private newOptimizer(): TfCore.Optimizer {
    const { tf, spec } = this;
    const registry = tf.serialization.SerializationMap.getMap().classNameMap;
    const entry = Object.hasOwn(registry, spec.className) ? registry[spec.className] : undefined;
    const unknown = () =>
      new RingInvalidArgError(`parameter server ${this.server}: the optimizer class '${peerText(spec.className, 128)}' is not a tfjs optimizer known here`, {
        server: this.server,
        field: 'className',
      });
    if (!entry) throw unknown();
    let o: unknown;
    try {
      o = entry[1](entry[0], spec.config as TfCore.serialization.ConfigDict);
    } catch (e) {
      throw new RingInvalidArgError(`parameter server ${this.server}: cannot make a '${peerText(spec.className, 128)}' from its config: ${peerText(String((e as Error)?.message), 300)}`, {
        server: this.server,
        field: 'config',
      });
    }
    if (!(o instanceof tf.Optimizer)) throw unknown();
    return o;
  }

  has(key: number): boolean {
    return this.slots.has(key);
  }

  get size(): number {
    return this.slots.size;
  }

  /** Chunk `key` with initial values `values`. */
  create(key: number, values: Float32Array): void {
    const { tf } = this;
    this.free(key);
    if (this.sgd !== undefined) {
      this.slots.set(key, { values: values.slice(), iterations: 0, length: values.length });
      return;
    }
    const variable = tf.variable(tf.tensor1d(values, 'float32'), true, `ps${this.server}/c${key}`);
    this.slots.set(key, { variable, optimizer: this.newOptimizer(), iterations: 0, length: values.length });
  }

  private free(key: number): void {
    const s = this.slots.get(key);
    s?.variable?.dispose();
    s?.optimizer?.dispose();
  }

  /** One optimizer step of chunk `key` with gradient `grad`. */
  apply(key: number, grad: Float32Array): void {
    const s = this.slots.get(key)!;
    s.iterations++;
    if (s.values) return sgdStep(s.values, grad, this.sgd!);
    const { tf } = this;
    tf.tidy(() => s.optimizer!.applyGradients({ [s.variable!.name]: tf.tensor1d(grad, 'float32') }));
  }

  /**
   * Chunk `key`'s current values (not to be modified, nor kept: the SGD path updates them in place).
   */
  read(key: number): Float32Array {
    const s = this.slots.get(key)!;
    return s.values ?? (s.variable!.dataSync() as Float32Array);
  }

  /** The optimizer's state of a chunk, as tfjs's getWeights lists it (SGD: its iterations). */
  private async state(s: Slot): Promise<Array<{ name: string; tensor: TfCore.Tensor }>> {
    if (s.optimizer) return s.optimizer.getWeights();
    return [{ name: 'iter', tensor: this.tf.scalar(s.iterations, 'int32') }];
  }

  async save(dir: string, servers: number, clock: number): Promise<string> {
    await mkdir(dir, { recursive: true });
    const parts: Float32Array[] = [];
    let offset = 0;
    const put = (a: Float32Array) => {
      parts.push(a);
      const at = offset;
      offset += a.byteLength;
      return at;
    };
    const manifest: Manifest = { format: 'ringreduce-ps', version: 1, server: this.server, servers, clock, className: this.spec.className, config: this.spec.config, chunks: [] };
    for (const [key, s] of [...this.slots].sort((a, b) => a[0] - b[0])) {
      const at = put(this.read(key).slice());
      const state = [];
      for (const w of await this.state(s)) {
        const values = (await w.tensor.data()) as Float32Array;
        state.push({ name: w.name, shape: w.tensor.shape, offset: put(Float32Array.from(values)), count: values.length });
      }
      manifest.chunks.push({ key, length: s.length, offset: at, state });
    }
    const files = checkpointFiles(dir, this.server);
    const bin = Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
    // Written aside and renamed: a checkpoint interrupted half-way leaves the previous one whole.
    await writeFile(`${files.data}.tmp`, bin);
    await writeFile(`${files.manifest}.tmp`, JSON.stringify(manifest));
    await rename(`${files.data}.tmp`, files.data);
    await rename(`${files.manifest}.tmp`, files.manifest);
    return files.manifest;
  }

  /**
   * Loads a checkpoint of this server whose chunks are exactly `expected` (key -> length) and whose
   * optimizer is this one's class; returns the clock it was saved at.
   */
  async load(dir: string, servers: number, expected: ReadonlyMap<number, number>): Promise<number> {
    const files = checkpointFiles(dir, this.server);
    const where = `parameter server ${this.server}: checkpoint ${files.manifest}`;
    let m: Manifest;
    let bin: Buffer;
    try {
      m = JSON.parse(await readFile(files.manifest, 'utf8')) as Manifest;
      bin = await readFile(files.data);
    } catch (e) {
      throw new RingInvalidArgError(`${where}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { server: this.server });
    }
    const mismatch = (field: string, what: string) => new RingMismatchError(`${where}: ${what}`, { server: this.server, field });
    if (m?.format !== 'ringreduce-ps' || m.version !== 1 || !Array.isArray(m.chunks)) throw mismatch('format', 'not a parameter-server checkpoint of this version');
    if (m.servers !== servers) throw mismatch('servers', `it was saved by a job of ${m.servers} servers, this job has ${servers}`);
    if (m.className !== this.spec.className) throw mismatch('className', `it holds a '${m.className}' optimizer's state, the workers use '${this.spec.className}'`);
    const keys = new Map(m.chunks.map((c) => [c.key, c.length]));
    const same = keys.size === expected.size && [...expected].every(([k, n]) => keys.get(k) === n);
    if (!same) throw mismatch('chunks', `its chunks differ from the model's (${keys.size} chunks saved, ${expected.size} expected: another model, or another number of servers)`);
    const f32 = (offset: number, count: number) => {
      if (offset + count * 4 > bin.byteLength) throw mismatch('data', `${files.data} is shorter than its manifest says`);
      return new Float32Array(bin.buffer.slice(bin.byteOffset + offset, bin.byteOffset + offset + count * 4));
    };
    const { tf } = this;
    for (const c of m.chunks) {
      this.create(c.key, f32(c.offset, c.length));
      const slot = this.slots.get(c.key)!;
      const state = c.state.map((w) => ({ name: w.name, tensor: tf.tensor(f32(w.offset, w.count), w.shape, 'float32') }));
      if (slot.optimizer) await slot.optimizer.setWeights(state);
      else slot.iterations = state.length > 0 ? Math.round(state[0].tensor.dataSync()[0]) : 0;
      tf.dispose(state.map((w) => w.tensor));
    }
    return m.clock;
  }

  dispose(): void {
    for (const key of this.slots.keys()) this.free(key);
    this.slots.clear();
  }
}
