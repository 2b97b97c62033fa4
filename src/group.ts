import { createHash } from 'node:crypto';
import { RingAllgather } from './collectives/allgather.js';
import { RingAllreduce } from './collectives/allreduce.js';
import { RingBarrier } from './collectives/barrier.js';
import { RingBroadcast } from './collectives/broadcast.js';
import { EagerAllreduce, eagerFits } from './collectives/eager.js';
import { Communicator } from './collectives/communicator.js';
import type { Hierarchy } from './collectives/hierarchical.js';
import { runAlltoall } from './collectives/alltoall.js';
import { descriptor } from './collectives/descriptor.js';
import { codecFor, COMPRESSIONS, isCompression } from './compression/registry.js';
import type { NumericArray } from './dtypes.js';
import { RingInvalidArgError } from './errors.js';
import { silentLogger } from './logger.js';
import { Fabric, groupCommunicator, groupMembers } from './process-group.js';
import {
  Args,
  oneOf,
  type AllgatherOptions,
  type AllreduceOptions,
  type AlltoallOptions,
  type AlltoallResult,
  type BarrierOptions,
  type BroadcastOptions,
  type RecvOptions,
  type ReducescatterOptions,
  type SendOptions,
} from './arguments.js';

export type * from './arguments.js';
export type { ReduceOp } from './kernels/index.js';

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
  /** The host and cross-host rings for large all-reduces (world groups of a hierarchical layout only: see useHierarchy). */
  private hierarchy: Hierarchy | undefined;
  private children = 0;
  private alltoalls = 0;
  private readonly args = new Args(this);

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

  /**
   * @internal From now on, all-reduces of at least HIERARCHICAL_MIN_BYTES go through `h`
   * (formRing sets it on every rank of the world or on none, before init resolves). Groups made
   * by newGroup stay flat.
   */
  useHierarchy(h: Hierarchy): void {
    this.hierarchy = h;
  }

  /** Group rank -> world rank. */
  private world(r: number): number {
    return this.members ? this.members[r] : r;
  }

  get rank(): number {
    return this.comm.rank;
  }
  /** @internal What names this group across processes: its id and its members' world ranks. */
  get scope(): { id: string; members: number[] } {
    return { id: this.id, members: this.members ? this.members.slice() : Array.from({ length: this.size }, (_, r) => r) };
  }
  get size(): number {
    return this.comm.size;
  }

  /** Element-wise reduction across ranks; every rank gets the (bit-identical) result in a new array. */
  allreduce<T extends NumericArray>(x: T, options: AllreduceOptions = {}): Promise<T> {
    const dt = this.args.array('allreduce', x);
    const op = this.args.op('allreduce', options.op);
    const name = this.args.name('allreduce', options.name);
    const inPlace = this.args.flag('allreduce', 'inPlace', options.inPlace);
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
    if (this.hierarchy?.fits(x.byteLength)) {
      return this.hierarchy.allreduce(buf, { dtype: dt, op, compression, codec, name }, (c) => this.comm.run(d, c)) as Promise<T>;
    }
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
    const dt = this.args.array('reducescatter', x);
    const op = this.args.op('reducescatter', options.op);
    const name = this.args.name('reducescatter', options.name);
    return this.comm.run(
      descriptor('reducescatter', { dtype: dt.code, count: x.length, name, op }),
      new RingAllreduce(x.slice(), dt, op, this.rank, this.size, true),
    ) as Promise<T>;
  }

  /** Concatenation of every rank's array in rank order; lengths may differ between ranks. */
  allgather<T extends NumericArray>(x: T, options: AllgatherOptions = {}): Promise<T> {
    const dt = this.args.array('allgather', x);
    const name = this.args.name('allgather', options.name);
    return this.comm.run(descriptor('allgather', { dtype: dt.code, count: x.length, name }), new RingAllgather(x, dt, this.size)) as Promise<T>;
  }

  /** The root's array, on every rank, in a new array (x itself is left unchanged). */
  broadcast<T extends NumericArray>(x: T, options: BroadcastOptions = {}): Promise<T> {
    const dt = this.args.array('broadcast', x);
    const root = options.root ?? 0;
    if (!Number.isInteger(root) || root < 0 || root >= this.size) {
      throw new RingInvalidArgError(`broadcast: options.root must be an integer rank in 0..${this.size - 1}, got ${String(root)}`, {
        op: 'broadcast',
      });
    }
    const name = this.args.name('broadcast', options.name);
    return this.comm.run(descriptor('broadcast', { dtype: dt.code, count: x.length, name, root }), new RingBroadcast(x, dt, root, this.rank)) as Promise<T>;
  }

  private fabricFor(fn: string): Fabric {
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
    const dt = this.args.array('send', x);
    const o = options ?? ({} as SendOptions);
    const dst = this.args.peer('send', 'dst', o.dst);
    const tag = this.args.tag('send', o.tag);
    return this.fabricFor('send').p2p.send(this.id, this.world(dst), tag, x, dt, { me: this.rank, peer: dst });
  }

  /** Fills `into` with what rank `src` sends with the same tag (same dtype and length), resolves to it. */
  recv<T extends NumericArray>(into: T, options: RecvOptions): Promise<T> {
    const dt = this.args.array('recv', into);
    const o = options ?? ({} as RecvOptions);
    const src = this.args.peer('recv', 'src', o.src);
    const tag = this.args.tag('recv', o.tag);
    return this.fabricFor('recv').p2p.recv(this.id, this.world(src), tag, into, dt, { me: this.rank, peer: src });
  }

  /**
   * Every rank sends splits[j] elements of x to rank j and receives what every rank sends it:
   * `data` in rank order, `splits` how many came from each.
   */
  alltoall<T extends NumericArray>(x: T, options: AlltoallOptions = {}): Promise<AlltoallResult<T>> {
    const dt = this.args.array('alltoall', x);
    const name = this.args.name('alltoall', options.name);
    const splits = this.args.splits(x.length, options.splits);
    const into = this.args.into(x, options.into);
    const tag = this.alltoalls++;
    const ctx = `${this.id}/alltoall`;
    const fabric = this.size > 1 ? this.fabricFor('alltoall') : undefined;
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
      into,
    );
  }

  /**
   * A process group of the listed ranks (this group's numbering), called by EVERY rank of this
   * group with the same list, in the same order as its collectives. Members get a ProcessGroup
   * (ranks numbered 0..k-1 in ascending order of the listed ranks), with every collective and
   * point-to-point call; other ranks get null. Groups run independently.
   */
  async newGroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    const members = groupMembers(ranks, this.size, this.rank);
    const id = `${this.id}.${this.children++}`;
    // Every rank must name the same list: a barrier named by it turns a difference into a mismatch.
    await this.barrier({ name: newGroupName(members) });
    const index = members.indexOf(this.rank);
    if (index < 0) return null;
    const g = await this.memberGroup(id, members.map((r) => this.world(r)));
    return new ProcessGroup(g, members);
  }

  /**
   * @internal The group of the listed world ranks, made by its members only (no barrier of this
   * group's ranks): newGroup's second half, and how the comm worker mirrors a process set on its
   * own links when a DistributedOptimizer first reduces over it (engine/worker.ts). `id` names
   * the group's channel: equal on every member, distinct from every other group of this fabric.
   */
  async memberGroup(id: string, worldMembers: number[]): Promise<RingGroup> {
    const index = worldMembers.indexOf(this.world(this.rank));
    if (index < 0) throw new RingInvalidArgError(`rank ${this.rank}: group ${id}: this rank is not one of its members [${worldMembers.join(', ')}]`, { rank: this.rank });
    const fabric = worldMembers.length > 1 ? this.fabricFor('newGroup') : this.fabric;
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
    return g;
  }

  /** Resolves once every rank has called barrier(). */
  barrier(options: BarrierOptions = {}): Promise<void> {
    const name = this.args.name('barrier', options.name);
    return this.comm.run(descriptor('barrier', { name }), new RingBarrier());
  }

  /** Closes this rank's links (after telling its neighbours). Pending operations reject. */
  async shutdown(): Promise<void> {
    await this.comm.shutdown();
    await this.onShutdown();
  }
}

/**
 * What newGroup() gives a member: the same calls as the module's free functions (`rank()`,
 * `size()`, every collective, send/recv, alltoall, newGroup, shutdown), with ranks numbered
 * inside the group (0..size-1 in ascending order of the listed ranks).
 */
export class ProcessGroup {
  /** @internal */
  constructor(
    private readonly g: RingGroup,
    private readonly worldRanks: number[],
  ) {}
  rank(): number {
    return this.g.rank;
  }
  size(): number {
    return this.g.size;
  }
  /** @internal The group's id and its members' world ranks (see RingGroup.scope). */
  get scope(): { id: string; members: number[] } {
    return this.g.scope;
  }
  /** The members' ranks in the parent's numbering, by group rank. */
  ranks(): number[] {
    return this.worldRanks.slice();
  }
  allreduce<T extends NumericArray>(x: T, o?: AllreduceOptions): Promise<T> {
    return this.g.allreduce(x, o);
  }
  allgather<T extends NumericArray>(x: T, o?: AllgatherOptions): Promise<T> {
    return this.g.allgather(x, o);
  }
  broadcast<T extends NumericArray>(x: T, o?: BroadcastOptions): Promise<T> {
    return this.g.broadcast(x, o);
  }
  reducescatter<T extends NumericArray>(x: T, o?: ReducescatterOptions): Promise<T> {
    return this.g.reducescatter(x, o);
  }
  barrier(o?: BarrierOptions): Promise<void> {
    return this.g.barrier(o);
  }
  alltoall<T extends NumericArray>(x: T, o?: AlltoallOptions): Promise<AlltoallResult<T>> {
    return this.g.alltoall(x, o);
  }
  send(x: NumericArray, o: SendOptions): Promise<void> {
    return this.g.send(x, o);
  }
  recv<T extends NumericArray>(into: T, o: RecvOptions): Promise<T> {
    return this.g.recv(into, o);
  }
  newGroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    return this.g.newGroup(ranks);
  }
  shutdown(): Promise<void> {
    return this.g.shutdown();
  }
}

/**
 * The name of newGroup's barrier: the member list itself, or (a list too long for a name: see
 * MAX_NAME_CHARS) its size, ends and digest, which still differ whenever the lists do.
 */
function newGroupName(members: readonly number[]): string {
  const list = members.join(',');
  if (list.length <= 512) return `ringreduce:newGroup [${list}]`;
  const digest = createHash('sha256').update(list).digest('hex').slice(0, 16);
  return `ringreduce:newGroup [${members.length} ranks: ${members.slice(0, 8).join(',')},...,${members.slice(-8).join(',')}; sha256 ${digest}]`;
}
