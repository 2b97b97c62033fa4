import type { Codec } from '../compression/codec.js';
import type { Compression } from '../compression/registry.js';
import type { DTypeInfo, NumericArray } from '../dtypes.js';
import { deserializeError, RingError, RingInternalError, type RingErrorDetails } from '../errors.js';
import { divideInPlace, type ReduceOp } from '../kernels/index.js';
import { peerText } from '../peer-text.js';
import { RingAllgather } from './allgather.js';
import { RingAllreduce } from './allreduce.js';
import type { Collective, OpContext } from './collective.js';
import type { Communicator } from './communicator.js';
import { descriptor } from './descriptor.js';
import { EagerAllreduce, eagerFits } from './eager.js';
import { segmentRange } from './schedule.js';

/**
 * Hierarchical all-reduce (Horovod's hierarchical allreduce, NCCL's split into intra- and
 * inter-node steps) for ranks spread over H hosts with L ranks each (rendezvous/hosts.ts decides
 * when the layout allows it). Local rank i of a host:
 *
 *   1. reduce-scatter on the host ring (the host's L ranks, links through shared memory): it ends
 *      with segment i of the host's sum (segments as in schedule.ts, the first count % L of them
 *      one element longer);
 *   2. all-reduce of segment i on cross-host ring i (local rank i of every host): the L cross-host
 *      rings run at once, so every rank of a host uses the network, each for 1/L of the data;
 *   3. all-gather of the segments on the host ring.
 *
 * Bytes each host sends to the network: 2(H-1)/H of the input, against the flat ring's 2(N-1)/N
 * through every one of its links, the H links between hosts included (2 x 2: 1x against 1.5x).
 * The reduction order differs from the flat ring's, so the values may differ from it in the last
 * bits, but every rank ends with the same bits (steps 2 and 3 hand every rank the same segments)
 * and integer-valued data is exact. 'average' sums and divides once, by the world size, on the
 * finished segment. Wire compression (fp16/bf16) applies to the cross-host rings only: the host
 * steps go through shared memory, where 16 bits would only cost a conversion.
 *
 * It runs as a collective of the world ring first (HierarchicalAllreduce): the descriptors go
 * around the world ring as for every collective, so by the time the steps start every rank has
 * checked every rank's descriptor (a rank passing another size, dtype or op fails the same way on
 * every rank, and no step starts anywhere). Then the world operation waits for the steps
 * (OpContext.elsewhere). The steps of successive all-reduces run one after the other, in the
 * order of the world's operations: the host and cross-host rings must see their operations in
 * the same order on every rank.
 */

/**
 * Inputs of at least this many bytes take the hierarchical path; smaller ones the flat ring (or the
 * eager path). Three operations on two rings instead of one cost their latency: on 2 x 2 emulated
 * hosts a 256 KiB all-reduce took 2.1x the flat ring's time, 1 MiB was a toss-up between runs, and
 * from 4 MiB on the hierarchical path was ahead (docs/PERFORMANCE.md, Threshold).
 */
export const HIERARCHICAL_MIN_BYTES = 1 << 20;

/**
 * The hierarchical steps run over pieces of at most this many bytes, so that the host ring and the
 * cross-host rings overlap (see Hierarchy.steps); one operation per piece and ring costs a
 * descriptor round each, so pieces stay large.
 */
export const PIECE_BYTES = 8 << 20;
const pieceCount = (bytes: number): number => Math.max(1, Math.ceil(bytes / PIECE_BYTES));

/** What one all-reduce is, as the world ring's descriptor says. */
export interface HierarchicalInput {
  dtype: DTypeInfo;
  op: ReduceOp;
  compression: Compression;
  codec: Codec | undefined;
  name: string;
}

/** The world operation: an agreement only, its data moves on the host and cross-host rings. */
export class HierarchicalAllreduce implements Collective<NumericArray> {
  readonly needsTable = true;
  /** Nothing comes from the world ring's left neighbour but descriptors: all in at onTable. */
  received = false;

  constructor(
    private readonly buf: NumericArray,
    private readonly agreed: (done: ReturnType<OpContext['elsewhere']>) => void,
  ) {}

  start(): void {}

  onTable(ctx: OpContext): void {
    this.received = true;
    this.agreed(ctx.elsewhere());
  }

  onData(): string {
    return 'a hierarchical all-reduce moves its data on the host and cross-host rings, not in frames of the world ring';
  }

  result(): NumericArray {
    return this.buf;
  }
}

/** The host step's reduce-scatter leaves this rank's segment in the buffer, where the later steps want it. */
class InPlaceReduceScatter extends RingAllreduce {
  override result(): NumericArray {
    return this.buf;
  }
}

/** A ring of some world ranks: its communicator and the world rank of each member. */
export interface SubRing {
  comm: Communicator;
  members: number[];
}

/** This rank's host ring and cross-host ring, made once at init (process-group.ts). */
export class Hierarchy {
  /** Settles when the steps of the last all-reduce queued are done (or will never run). */
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly rank: number,
    private readonly worldSize: number,
    readonly host: SubRing,
    readonly cross: SubRing,
  ) {}

  /** Whether an input of `bytes` takes the hierarchical path. */
  fits(bytes: number): boolean {
    return bytes >= HIERARCHICAL_MIN_BYTES;
  }

  /**
   * All-reduces `buf` in place: `runWorld` runs the given collective on the world ring (with the
   * operation's descriptor), and resolves to `buf` once the steps are done.
   */
  allreduce(buf: NumericArray, x: HierarchicalInput, runWorld: (c: Collective<NumericArray>) => Promise<NumericArray>): Promise<NumericArray> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    let started = false;
    const coll = new HierarchicalAllreduce(buf, (done) => {
      started = true;
      prev
        .then(() => this.steps(buf, x))
        .then(
          () => done(),
          (e: RingError) => done(e, this.host.comm.error !== undefined || this.cross.comm.error !== undefined),
        )
        .finally(release);
    });
    const p = runWorld(coll);
    // Failed before the agreement completed (a mismatch, a broken ring): on every rank alike, no step runs.
    p.catch(() => {
      if (!started) release();
    });
    return p;
  }

  /**
   * The three steps, over pieces of the buffer so that the two rings work at once: while cross-host
   * ring i all-reduces piece p's segment, the host ring reduce-scatters piece p+1 and gathers piece
   * p-1. Each ring runs its operations one at a time, in an order that is the same on every rank
   * (host: RS 0, RS 1, AG 0, RS 2, AG 1, ..., AG P-1; cross: AR 0, AR 1, ...), each started once
   * the one before it on its ring has finished and its input is ready. One at a time keeps a
   * ring's frames in the order its operations run, as with any sequence of collectives (see the
   * early frames in docs/ARCHITECTURE.md). The first error wins; every step after it on a ring
   * that depends on it is not started.
   */
  private async steps(buf: NumericArray, x: HierarchicalInput): Promise<void> {
    const { host, cross } = this;
    const sum: ReduceOp = x.op === 'average' ? 'sum' : x.op;
    const L = host.comm.size;
    const H = cross.comm.size;
    const d = { dtype: x.dtype.code, name: x.name };
    const P = pieceCount(buf.byteLength);
    const slice = (b: NumericArray, parts: number, i: number) => {
      const r = segmentRange(b.length, parts, i);
      return b.subarray(r.offset, r.offset + r.length);
    };
    let hostDone: Promise<unknown> = Promise.resolve();
    let crossDone: Promise<unknown> = Promise.resolve();
    const onHost = (ready: Promise<unknown>, step: () => Promise<unknown>) => (hostDone = Promise.all([hostDone, ready]).then(() => this.on(host, x, step)));
    const onCross = (ready: Promise<unknown>, step: () => Promise<unknown>) => (crossDone = Promise.all([crossDone, ready]).then(() => this.on(cross, x, step)));
    const all: Promise<unknown>[] = [];
    const reduced: Promise<unknown>[] = [];
    const gather = (p: number) => {
      const piece = slice(buf, P, p);
      const shard = slice(piece, L, host.comm.rank);
      all.push(onHost(reduced[p], () => host.comm.run(descriptor('allgather', { ...d, count: shard.length }), new RingAllgather(shard, x.dtype, L, piece))));
    };
    for (let p = 0; p < P; p++) {
      const piece = slice(buf, P, p);
      const shard = slice(piece, L, host.comm.rank);
      const scattered = onHost(Promise.resolve(), () =>
        host.comm.run(descriptor('reducescatter', { ...d, count: piece.length, op: sum }), new InPlaceReduceScatter(piece, x.dtype, sum, host.comm.rank, L, true)),
      );
      reduced[p] = onCross(scattered, async () => {
        await cross.comm.run(
          descriptor('allreduce', { ...d, count: shard.length, op: sum, compression: x.compression }),
          eagerFits(shard.byteLength, H, cross.comm.chunkBytes)
            ? new EagerAllreduce(shard, x.dtype, sum)
            : new RingAllreduce(shard, x.dtype, sum, cross.comm.rank, H, false, x.codec),
        );
        // Once, on the finished segment: the cross-host ring handed every member the same bits.
        if (x.op === 'average') divideInPlace(shard, this.worldSize);
      });
      all.push(scattered, reduced[p]);
      if (p > 0) gather(p - 1);
    }
    gather(P - 1);
    const settled = await Promise.allSettled(all);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Runs a step on `ring`; its error becomes this rank's error for the world operation: the same
   * class and code, ranks in world numbering, saying on which ring it happened.
   */
  private async on<T>(ring: SubRing, x: HierarchicalInput, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (e) {
      const what = `rank ${this.rank}: hierarchical allreduce${x.name ? ` '${peerText(x.name)}'` : ''}`;
      if (!(e instanceof RingError)) throw new RingInternalError(`${what}: ${(e as Error)?.message ?? String(e)}`, { rank: this.rank, op: 'allreduce' });
      const which = ring === this.host ? 'host ring' : 'cross-host ring';
      const details: RingErrorDetails = { ...e.details, rank: this.rank, op: 'allreduce', ranks: e.details.ranks?.map((r) => ring.members[r] ?? r) };
      delete details.seq;
      throw deserializeError({ code: e.code, message: `${what}: on the ${which} of world ranks ${ring.members.join(', ')} (its ranks 0..${ring.members.length - 1}): ${e.message}`, details });
    }
  }

  /** Closes both rings (the world's shutdown does it, through the fabric). */
  async shutdown(): Promise<void> {
    await Promise.all([this.host.comm.shutdown(), this.cross.comm.shutdown()]);
  }
}
