import { RingAllgather } from './collectives/allgather.js';
import { RingAllreduce } from './collectives/allreduce.js';
import { RingBarrier } from './collectives/barrier.js';
import { RingBroadcast } from './collectives/broadcast.js';
import { EagerAllreduce, eagerFits } from './collectives/eager.js';
import { Communicator } from './collectives/communicator.js';
import { dtypeOf, type DTypeInfo, type NumericArray } from './dtypes.js';
import { RingInvalidArgError } from './errors.js';
import { silentLogger } from './logger.js';
import { runAlltoall } from './collectives/alltoall.js';
import { Fabric, groupCommunicator, groupMembers, ProcessGroup } from './process-group.js';
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
export interface SendOptions {
  /** The rank to send to (in this group's numbering). */
  dst: number;
  /** Matches the recv with the same tag (default 0): a non-negative integer. */
  tag?: number;
}
export interface RecvOptions {
  /** The rank to receive from (in this group's numbering). */
  src: number;
  tag?: number;
}
export interface AlltoallOptions {
  /** splits[j] elements of x go to rank j, in order (default: x.length / size each). */
  splits?: ArrayLike<number>;
  name?: string;
}
export interface AlltoallResult<T> {
  /** What every rank sent to this one, concatenated in rank order. */
  data: T;
  /** How many elements came from each rank. */
  splits: number[];
}

/** What a group needs beyond its ring: see process-group.ts. */
export interface GroupInfo {
  localRank: number;
  localSize: number;
  address?: string;
  onShutdown?: () => Promise<void>;
  /** Links to any rank and the point-to-point engine (absent: a lone rank, or a bare test ring). */
  fabric?: Fabric;
  /** World rank of each member, by group rank (default: the identity). */
  members?: number[];
  /** Names this group's point-to-point traffic ('0' for the world; a child of g is g.k). */
  id?: string;
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
  private readonly fabric: Fabric | undefined;
  private readonly members: number[] | undefined;
  private readonly id: string;
  private children = 0;
  private alltoalls = 0;

  constructor(
    private readonly comm: Communicator,
    info: GroupInfo,
  ) {
    this.localRank = info.localRank;
    this.localSize = info.localSize;
    this.address = info.address;
    this.onShutdown = info.onShutdown ?? (async () => {});
    this.fabric = info.fabric;
    this.members = info.members;
    this.id = info.id ?? '0';
  }

  /** Group rank -> world rank. */
  private world(r: number): number {
    return this.members ? this.members[r] : r;
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

  /** A rank of this group other than this one, from options[field] (dst / src). */
  private peer(fn: string, field: string, v: unknown): number {
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) >= this.size || v === this.rank) {
      const why = v === this.rank ? `is this rank itself` : `must be an integer rank in 0..${this.size - 1}`;
      throw new RingInvalidArgError(`${fn}: options.${field} ${why}, got ${JSON.stringify(v)}`, { rank: this.rank, op: fn, field });
    }
    return v as number;
  }

  private tag(fn: string, v: unknown): number {
    if (v === undefined) return 0;
    if (!Number.isSafeInteger(v) || (v as number) < 0) {
      throw new RingInvalidArgError(`${fn}: options.tag must be a non-negative integer, got ${JSON.stringify(v)}`, { rank: this.rank, op: fn, field: 'tag' });
    }
    return v as number;
  }

  private p2p(fn: string): Fabric {
    if (!this.fabric) {
      throw new RingInvalidArgError(`${fn}: this group has no links to other ranks (a single rank, or a ring made without a mesh)`, { rank: this.rank, op: fn });
    }
    return this.fabric;
  }

  /**
   * Sends x to rank `dst`; resolves once dst's matching recv (same tag, in call order per pair)
   * has taken it, so x may be reused. Post sends and recvs together (Promise.all): a rank that
   * awaits its send before posting its recv waits for the peer, as with Gloo or MPI_Ssend.
   */
  send(x: NumericArray, options: SendOptions): Promise<void> {
    const dt = this.array('send', x);
    const o = options ?? ({} as SendOptions);
    const dst = this.peer('send', 'dst', o.dst);
    const tag = this.tag('send', o.tag);
    return this.p2p('send').p2p.send(this.id, this.world(dst), tag, x, dt, { me: this.rank, peer: dst });
  }

  /** Fills `into` with what rank `src` sends with the same tag (same dtype and length), resolves to it. */
  recv<T extends NumericArray>(into: T, options: RecvOptions): Promise<T> {
    const dt = this.array('recv', into);
    const o = options ?? ({} as RecvOptions);
    const src = this.peer('recv', 'src', o.src);
    const tag = this.tag('recv', o.tag);
    return this.p2p('recv').p2p.recv(this.id, this.world(src), tag, into, dt, { me: this.rank, peer: src });
  }

  /**
   * Every rank sends splits[j] elements of x to rank j and receives what every rank sends it:
   * `data` in rank order, `splits` how many came from each.
   */
  alltoall<T extends NumericArray>(x: T, options: AlltoallOptions = {}): Promise<AlltoallResult<T>> {
    const dt = this.array('alltoall', x);
    const name = this.name('alltoall', options.name);
    const splits = this.splits(x.length, options.splits);
    const tag = this.alltoalls++;
    const ctx = `${this.id}/alltoall`;
    const fabric = this.size > 1 ? this.p2p('alltoall') : undefined;
    const names = (peer: number) => ({ me: this.rank, peer });
    return runAlltoall(
      {
        rank: this.rank,
        size: this.size,
        chunkBytes: this.comm.chunkBytes,
        agree: (d, coll) => this.comm.run(d, coll),
        send: (piece, j, t) => fabric!.p2p.send(ctx, this.world(j), t, piece, dt, names(j)),
        recv: (into, j, t) => fabric!.p2p.recv(ctx, this.world(j), t, into, dt, names(j)),
      },
      x,
      dt,
      splits,
      descriptor('alltoall', { dtype: dt.code, count: x.length, name }),
      tag,
    );
  }

  private splits(count: number, v: unknown): Int32Array {
    const n = this.size;
    const bad = (what: string) => new RingInvalidArgError(`alltoall: options.splits ${what}`, { rank: this.rank, op: 'alltoall', field: 'splits' });
    if (v === undefined) {
      if (count % n !== 0) throw bad(`is not given and x.length (${count}) is not a multiple of the group size (${n}); pass splits`);
      return new Int32Array(n).fill(count / n);
    }
    const a = v as ArrayLike<unknown>;
    if (v === null || typeof v !== 'object' || typeof a.length !== 'number' || a.length !== n) {
      throw bad(`must be an array of ${n} element counts (one per rank), got ${JSON.stringify(v)}`);
    }
    const out = new Int32Array(n);
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const s = a[j];
      if (!Number.isInteger(s) || (s as number) < 0 || (s as number) > 0x7fffffff) {
        throw new RingInvalidArgError(`alltoall: options.splits[${j}] must be a non-negative integer, got ${JSON.stringify(s)}`, {
          rank: this.rank,
          op: 'alltoall',
          field: 'splits',
        });
      }
      out[j] = s as number;
      sum += s as number;
    }
    if (sum !== count) throw bad(`sum to ${sum}, but x has ${count} elements`);
    return out;
  }

  /**
   * A process group of the listed ranks (this group's numbering), called by EVERY rank of this
   * group with the same list, in the same order as its collectives. Members get a RingGroup of
   * their own (ranks numbered 0..k-1 in ascending order of the listed ranks), with every
   * collective and point-to-point call; other ranks get null. Groups run independently.
   */
  async newGroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    const members = groupMembers(ranks, this.size, this.rank);
    const id = `${this.id}.${this.children++}`;
    // Every rank must name the same list: a barrier named by it turns a difference into a mismatch.
    await this.barrier({ name: `ringreduce:newGroup [${members.join(',')}]` });
    const index = members.indexOf(this.rank);
    if (index < 0) return null;
    const worldMembers = members.map((r) => this.world(r));
    const fabric = members.length > 1 ? this.p2p('newGroup') : this.fabric;
    const comm = fabric
      ? await groupCommunicator(fabric, id, worldMembers, index)
      : new Communicator(0, 1, undefined, undefined, { chunkBytes: this.comm.chunkBytes, maxInflight: 1, timeoutMs: 0, logger: silentLogger });
    const g: RingGroup = new RingGroup(comm, {
      localRank: this.localRank,
      localSize: this.localSize,
      fabric,
      members: worldMembers,
      id,
      onShutdown: async () => fabric?.forget(g),
    });
    fabric?.adopt(g);
    await g.barrier({ name: `ringreduce:group ${id}` });
    return new ProcessGroup(g, members);
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
