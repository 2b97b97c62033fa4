import { type Compression } from './compression/registry.js';
import { dtypeOf, type DTypeInfo, type NumericArray } from './dtypes.js';
import { RingInvalidArgError } from './errors.js';
import type { ReduceOp } from './kernels/index.js';
import { MAX_NAME_CHARS, REDUCE_OPS } from './collectives/descriptor.js';

/**
 * The public API's options, and the checks every call's arguments pass at this boundary: a bad
 * one is a RingInvalidArgError naming the call and the option.
 */
export interface AllreduceOptions {
  /** Reduction: 'sum' (default), 'average', 'min', 'max', 'product'. */
  op?: ReduceOp;
  /** A name for the operation (at most 1,024 characters); ranks must agree on it (helps to find mismatched calls). */
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
  /**
   * Receive into this array (same type as x; its length must be what arrives, the sum of the
   * splits the other ranks send here) instead of a new one: a fresh result costs page faults,
   * measured 3x the time of a 16 MiB all-to-all of 2 ranks when the previous result is still held.
   */
  into?: NumericArray;
}
export interface AlltoallResult<T> {
  /** What every rank sent to this one, concatenated in rank order. */
  data: T;
  /** How many elements came from each rank. */
  splits: number[];
}

/** 'a', 'b' or 'c': how an option's error lists the values it takes. */
export function oneOf(values: readonly string[]): string {
  const q = values.map((v) => `'${v}'`);
  return q.length > 1 ? `${q.slice(0, -1).join(', ')} or ${q[q.length - 1]}` : q.join('');
}

/** The argument checks of one group's calls (ranks are the group's). */
export class Args {
  constructor(private readonly g: { readonly rank: number; readonly size: number }) {}

  array(fn: string, x: unknown): DTypeInfo {
    const dt = dtypeOf(x);
    if (!dt) {
      const got = x === null ? 'null' : typeof x === 'object' ? (x as object).constructor?.name ?? 'object' : typeof x;
      throw new RingInvalidArgError(
        `${fn}(x): x must be a Float32Array, Float64Array, Int32Array, Uint32Array, Int16Array, Uint16Array, Int8Array or Uint8Array, got ${got}`,
        { rank: this.g.rank, op: fn },
      );
    }
    return dt;
  }

  name(fn: string, name: unknown): string {
    if (name === undefined) return '';
    if (typeof name !== 'string') throw new RingInvalidArgError(`${fn}: options.name must be a string, got ${typeof name}`, { op: fn });
    if (name.length > MAX_NAME_CHARS) {
      throw new RingInvalidArgError(`${fn}: options.name must be at most ${MAX_NAME_CHARS} characters, got ${name.length}`, { op: fn, field: 'name' });
    }
    return name;
  }

  flag(fn: string, option: string, v: unknown): boolean {
    if (v === undefined) return false;
    if (typeof v !== 'boolean') throw new RingInvalidArgError(`${fn}: options.${option} must be a boolean, got ${typeof v}`, { op: fn });
    return v;
  }

  op(fn: string, op: unknown): ReduceOp {
    if (op === undefined) return 'sum';
    if (!REDUCE_OPS.includes(op as ReduceOp)) {
      throw new RingInvalidArgError(`${fn}: options.op must be one of ${REDUCE_OPS.join(', ')}, got ${JSON.stringify(op)}`, { op: fn });
    }
    return op as ReduceOp;
  }

  /** A rank of this group other than this one, from options[field] (dst / src). */
  peer(fn: string, field: string, v: unknown): number {
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) >= this.g.size || v === this.g.rank) {
      const why = v === this.g.rank ? `is this rank itself` : `must be an integer rank in 0..${this.g.size - 1}`;
      throw new RingInvalidArgError(`${fn}: options.${field} ${why}, got ${JSON.stringify(v)}`, { rank: this.g.rank, op: fn, field });
    }
    return v as number;
  }

  tag(fn: string, v: unknown): number {
    if (v === undefined) return 0;
    if (!Number.isSafeInteger(v) || (v as number) < 0) {
      throw new RingInvalidArgError(`${fn}: options.tag must be a non-negative integer, got ${JSON.stringify(v)}`, { rank: this.g.rank, op: fn, field: 'tag' });
    }
    return v as number;
  }

  /** alltoall's options.into: an array of x's own type (its length is checked once sizes are known). */
  into<T extends NumericArray>(x: T, v: unknown): T | undefined {
    if (v === undefined) return undefined;
    if (v === null || typeof v !== 'object' || v.constructor !== x.constructor) {
      const got = v === null ? 'null' : typeof v === 'object' ? v.constructor.name : typeof v;
      throw new RingInvalidArgError(`alltoall: options.into must be a ${x.constructor.name} like x, got ${got}`, { rank: this.g.rank, op: 'alltoall', field: 'into' });
    }
    return v as T;
  }

  splits(count: number, v: unknown): Int32Array {
    const n = this.g.size;
    const bad = (what: string) => new RingInvalidArgError(`alltoall: options.splits ${what}`, { rank: this.g.rank, op: 'alltoall', field: 'splits' });
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
          rank: this.g.rank,
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
}
