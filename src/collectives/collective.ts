import type { RingError } from '../errors.js';
import type { DataHeader } from '../transport/wire.js';
import type { OpDescriptor } from './descriptor.js';

/** This rank's place in the ring. */
export interface RingPlace {
  readonly rank: number;
  readonly size: number;
  /** Rank this one receives data from: (rank - 1) mod size. */
  readonly left: number;
  /** Rank this one sends data to: (rank + 1) mod size. */
  readonly right: number;
}

/**
 * What the communicator gives a running collective. A collective only computes offsets, moves
 * bytes between its buffers and the frames, and says when it has received everything; the
 * communicator does sequencing, agreement checks, flow control, timeouts and failures.
 */
export interface OpContext extends RingPlace {
  /** Elements per chunk for this operation's dtype. */
  readonly chunkElems: number;
  /**
   * Sends one data frame to the right neighbour. `payload` must stay unchanged until the
   * operation completes (the communicator resolves only after every send has flushed).
   */
  send(step: number, chunk: number, payload: Uint8Array, codec?: number, scale?: number): void;
  /**
   * A frame whose `bytes` bytes are written when it leaves: `fill` writes them (into the link's
   * shared-memory slot, or a buffer of the communicator's) and returns the frame's scale. What
   * `fill` reads must not change until then.
   */
  sendFilled(step: number, chunk: number, bytes: number, codec: number, fill: (dst: Uint8Array) => number): void;
  /** Every rank's descriptor, indexed by rank (complete only once `onTable` has run). */
  readonly descriptors: readonly (OpDescriptor | undefined)[];
  /** Every rank's inline payload (see Collective.inline), indexed by rank, like `descriptors`. */
  readonly inline: readonly (Uint8Array | undefined)[];
  /**
   * For a collective whose data moves on other communicators once every rank has agreed here
   * (hierarchical.ts): called once, from onTable. The operation then completes only when the
   * returned function is called — with nothing when the work elsewhere is done, or with the error
   * that ends it; `fatal` (the other communicator broke) fails this ring too, so that every rank
   * learns it. Meanwhile this operation has no deadline of its own: the operations it runs
   * elsewhere have theirs, and their failure is what the function reports.
   */
  elsewhere(): (error?: RingError, fatal?: boolean) => void;
}

/** A rank whose contribution cannot be used (the communicator makes it a protocol error). */
export interface TableProblem {
  rank: number;
  problem: string;
}

export interface Collective<T> {
  /**
   * True if data frames may only be handled once every rank's descriptor is known (allgather
   * needs the other ranks' counts to place data). Otherwise only the left neighbour's descriptor
   * must have been checked.
   */
  readonly needsTable: boolean;
  /**
   * True if it never sends or receives data frames: all it needs is every rank's descriptor (a
   * barrier, a small all-reduce whose inputs ride inline). Such an operation may take the
   * communicator's direct route (comm/direct-route.ts) instead of the ring's N-1 hops.
   */
  readonly frameless?: boolean;
  /**
   * Bytes to carry inside this rank's descriptor, which visits every rank anyway: a small
   * operation then needs no data frames at all. Called once, before start().
   */
  inline?(): Uint8Array | undefined;
  /** Sends what this rank contributes before receiving anything. */
  start(ctx: OpContext): void;
  /** Every descriptor is in and they agree. A problem with a rank's inline payload is returned. */
  onTable?(ctx: OpContext): TableProblem | undefined | void;
  /**
   * One frame from the left neighbour. Returns a description of the problem when the frame is not
   * one this collective expects (the communicator turns it into a protocol error), including a
   * codec other than the one the operation uses (h.codec: 0 = raw).
   */
  onData(ctx: OpContext, h: DataHeader, payload: Uint8Array): string | undefined;
  /** True once every expected frame has been received and applied. */
  readonly received: boolean;
  /** The result, called once after completion. */
  result(): T;
}

/**
 * A typed view of a received payload. A frame may start at any byte offset within the socket's
 * buffer; typed arrays need an aligned start, so an unaligned payload is copied once.
 */
export function viewAs<A extends ArrayLike<number>>(
  ctor: { new (b: ArrayBufferLike, off: number, n: number): A; BYTES_PER_ELEMENT: number },
  payload: Uint8Array,
): A {
  const bpe = ctor.BYTES_PER_ELEMENT;
  if (payload.byteOffset % bpe === 0) return new ctor(payload.buffer, payload.byteOffset, payload.byteLength / bpe);
  const copy = new Uint8Array(payload.byteLength);
  copy.set(payload);
  return new ctor(copy.buffer, 0, payload.byteLength / bpe);
}
