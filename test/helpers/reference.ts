import type { NumericArray } from '../../src/dtypes.js';

export type Op = 'sum' | 'average' | 'min' | 'max' | 'product';
export const OPS: Op[] = ['sum', 'average', 'min', 'max', 'product'];

type Ctor = { new (n: number): NumericArray; from(a: ArrayLike<number>): NumericArray };

/**
 * Integer-valued inputs whose reductions are exact in every dtype used: sums of at most 6 values
 * in [-20, 20], products of at most 6 values in [-1, 2].
 */
export function input(ctor: Ctor, op: Op, rank: number, count: number): NumericArray {
  const a = new ctor(count);
  const unsigned = ctor === Uint8Array || ctor === Uint16Array || ctor === Uint32Array;
  for (let i = 0; i < count; i++) {
    let v = op === 'product' ? ((i + rank) % 4) - 1 : ((i * 7 + rank * 13) % 41) - 20;
    if (unsigned) v = Math.abs(v);
    a[i] = v;
  }
  return a;
}

/** The expected result computed in float64 from the same inputs, then stored as the dtype stores it. */
export function expected(ctor: Ctor, op: Op, inputs: NumericArray[]): NumericArray {
  const n = inputs.length;
  const count = inputs[0].length;
  const out = new ctor(count);
  const isFloat = ctor === Float32Array || ctor === Float64Array;
  for (let i = 0; i < count; i++) {
    let acc = inputs[0][i];
    for (let r = 1; r < n; r++) {
      const v = inputs[r][i];
      if (op === 'sum' || op === 'average') acc += v;
      else if (op === 'min') acc = Math.min(acc, v);
      else if (op === 'max') acc = Math.max(acc, v);
      else acc *= v;
    }
    if (op === 'average') {
      // The library divides the (exact) sum once, in the dtype.
      out[i] = isFloat ? (ctor === Float32Array ? Math.fround(Math.fround(acc) / n) : acc / n) : Math.trunc(acc / n);
    } else out[i] = acc;
  }
  return out;
}

export function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): string | undefined {
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) return `index ${i}: ${a[i]} vs ${b[i]}`;
  }
  return undefined;
}

/** Bitwise equality of two arrays' bytes. */
export function sameBytes(a: NumericArray, b: NumericArray): boolean {
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms (hang?)`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}
