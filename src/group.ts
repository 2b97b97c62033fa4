import { RingAllgather } from './collectives/allgather.js';
import { RingAllreduce } from './collectives/allreduce.js';
import { RingBarrier } from './collectives/barrier.js';
import { RingBroadcast } from './collectives/broadcast.js';
import { EagerAllreduce, eagerFits } from './collectives/eager.js';
import { Communicator } from './collectives/communicator.js';
import { dtypeOf, type DTypeInfo, type NumericArray } from './dtypes.js';
import { RingInvalidArgError } from './errors.js';
import type { ReduceOp } from './kernels/index.js';
import { descriptor, REDUCE_OPS } from './collectives/descriptor.js';
import { codecFor, COMPRESSIONS, isCompression, type Compression } from './compression/registry.js';

export type { ReduceOp } from './kernels/index.js';

export interface AllreduceOptions {
  /** Reduction: 'sum' (default), 'average', 'min', 'max', 'product'. */
  op?: ReduceOp;
  /** A name for the operation; ranks must agree on it (helps to find mismatched calls). */
  name?: string;
  /**
   * Reduce into `x` itself and return it, instead of a new array. Saves allocating (and
   * page-faulting) a buffer as large as `x` per call; `x` must not be touched until it resolves.
   */
  inPlace?: boolean;
  /**
   * Wire compression for Float32Array data: 'none' (default), 'fp16' or 'bf16'. Only the wire
   * carries 16 bits; each hop decodes into float32, accumulates in float32 and re-encodes.
   * Error bounds: see README ("Compression").
   */
  compression?: Compression;
}
export interface ReducescatterOptions {
  op?: ReduceOp;
  name?: string;
}
export interface AllgatherOptions {
  name?: string;
}
export interface BroadcastOptions {
  /** The rank whose data everyone receives (default 0). */
  root?: number;
  name?: string;
}
export interface BarrierOptions {
  name?: string;
}

/** 'a', 'b' or 'c': how an option's error lists the values it takes. */
function oneOf(values: readonly string[]): string {
  const q = values.map((v) => `'${v}'`);
  return q.length > 1 ? `${q.slice(0, -1).join(', ')} or ${q[q.length - 1]}` : q.join('');
}

/**
 * One rank's handle on a ring: rank, size and the collectives, with argument checks at this
 * public boundary. `init()` creates the process-wide one; `createLocalGroups()` makes several in
 * one process (tests, experiments).
 */
export class RingGroup {
  readonly localRank: number;
  readonly localSize: number;
  /** 'host:port' where this rank accepts its right neighbour's link (undefined without a network). */
  readonly address: string | undefined;
  private readonly onShutdown: () => Promise<void>;

  constructor(
    private readonly comm: Communicator,
    info: { localRank: number; localSize: number; address?: string; onShutdown?: () => Promise<void> },
  ) {
    this.localRank = info.localRank;
    this.localSize = info.localSize;
    this.address = info.address;
    this.onShutdown = info.onShutdown ?? (async () => {});
  }

  get rank(): number {
    return this.comm.rank;
  }
  get size(): number {
    return this.comm.size;
  }

  private array(fn: string, x: unknown): DTypeInfo {
    const dt = dtypeOf(x);
    if (!dt) {
      const got = x === null ? 'null' : typeof x === 'object' ? (x as object).constructor?.name ?? 'object' : typeof x;
      throw new RingInvalidArgError(
        `${fn}(x): x must be a Float32Array, Float64Array, Int32Array, Uint32Array, Int16Array, Uint16Array, Int8Array or Uint8Array, got ${got}`,
        { rank: this.rank, op: fn },
      );
    }
    return dt;
  }

  private name(fn: string, name: unknown): string {
    if (name === undefined) return '';
    if (typeof name !== 'string') throw new RingInvalidArgError(`${fn}: options.name must be a string, got ${typeof name}`, { op: fn });
    return name;
  }

  private flag(fn: string, option: string, v: unknown): boolean {
    if (v === undefined) return false;
    if (typeof v !== 'boolean') throw new RingInvalidArgError(`${fn}: options.${option} must be a boolean, got ${typeof v}`, { op: fn });
    return v;
  }

  private op(fn: string, op: unknown): ReduceOp {
    if (op === undefined) return 'sum';
    if (!REDUCE_OPS.includes(op as ReduceOp)) {
      throw new RingInvalidArgError(`${fn}: options.op must be one of ${REDUCE_OPS.join(', ')}, got ${JSON.stringify(op)}`, { op: fn });
    }
    return op as ReduceOp;
  }

  /** Element-wise reduction across ranks; every rank gets the (bit-identical) result in a new array. */
  allreduce<T extends NumericArray>(x: T, options: AllreduceOptions = {}): Promise<T> {
    const dt = this.array('allreduce', x);
    const op = this.op('allreduce', options.op);
    const name = this.name('allreduce', options.name);
    const inPlace = this.flag('allreduce', 'inPlace', options.inPlace);
    const compression = options.compression ?? 'none';
    if (!isCompression(compression)) {
      throw new RingInvalidArgError(`allreduce: options.compression must be ${oneOf(COMPRESSIONS)}, got ${JSON.stringify(compression)}`, { op: 'allreduce' });
    }
    const codec = codecFor(compression);
    if (codec && dt.name !== 'float32') {
      throw new RingInvalidArgError(`allreduce: options.compression '${compression}' applies to Float32Array data, got ${dt.name}`, { op: 'allreduce' });
    }
    const d = descriptor('allreduce', { dtype: dt.code, count: x.length, name, op, compression });
    const buf = inPlace ? x : x.slice();
    const coll = eagerFits(x.byteLength, this.size, this.comm.chunkBytes)
      ? new EagerAllreduce(buf, dt, op)
      : new RingAllreduce(buf, dt, op, this.rank, this.size, false, codec);
    return this.comm.run(d, coll) as Promise<T>;
  }

  /**
   * Reduces like allreduce, but each rank gets only its segment: rank r receives elements
   * [offset_r, offset_r + length_r) where the count is split as evenly as possible and the first
   * (count % size) ranks get one element more.
   */
  reducescatter<T extends NumericArray>(x: T, options: ReducescatterOptions = {}): Promise<T> {
    const dt = this.array('reducescatter', x);
    const op = this.op('reducescatter', options.op);
    const name = this.name('reducescatter', options.name);
    return this.comm.run(
      descriptor('reducescatter', { dtype: dt.code, count: x.length, name, op }),
      new RingAllreduce(x.slice(), dt, op, this.rank, this.size, true),
    ) as Promise<T>;
  }

  /** Concatenation of every rank's array in rank order; lengths may differ between ranks. */
  allgather<T extends NumericArray>(x: T, options: AllgatherOptions = {}): Promise<T> {
    const dt = this.array('allgather', x);
    const name = this.name('allgather', options.name);
    return this.comm.run(descriptor('allgather', { dtype: dt.code, count: x.length, name }), new RingAllgather(x, dt, this.size)) as Promise<T>;
  }

  /** The root's array, on every rank, in a new array (x itself is left unchanged). */
  broadcast<T extends NumericArray>(x: T, options: BroadcastOptions = {}): Promise<T> {
    const dt = this.array('broadcast', x);
    const root = options.root ?? 0;
    if (!Number.isInteger(root) || root < 0 || root >= this.size) {
      throw new RingInvalidArgError(`broadcast: options.root must be an integer rank in 0..${this.size - 1}, got ${String(root)}`, {
        op: 'broadcast',
      });
    }
    const name = this.name('broadcast', options.name);
    return this.comm.run(descriptor('broadcast', { dtype: dt.code, count: x.length, name, root }), new RingBroadcast(x, dt, root, this.rank)) as Promise<T>;
  }

  /** Resolves once every rank has called barrier(). */
  barrier(options: BarrierOptions = {}): Promise<void> {
    const name = this.name('barrier', options.name);
    return this.comm.run(descriptor('barrier', { name }), new RingBarrier());
  }

  /** Closes this rank's links (after telling its neighbours). Pending operations reject. */
  async shutdown(): Promise<void> {
    await this.comm.shutdown();
    await this.onShutdown();
  }
}
