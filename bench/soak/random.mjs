// What every rank of the soak draws alike from the shared seed: the generator, dtypes, element
// counts and the integer-valued inputs whose results are exact (see bench/soak.mjs --help).
import { mulberry32 } from '../../dist/prng.js';

/** Draws from mulberry32 (src/prng.ts): the same sequence from the same seed on every rank. */
export function prng(seed) {
  const next = mulberry32(seed);
  const int = (n) => Math.floor(next() * n);
  /** A random order of 0..n-1 (Fisher-Yates). */
  const permutation = (n) => {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = int(i + 1);
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  };
  return { next, int, pick: (xs) => xs[int(xs.length)], permutation };
}

/** `weights` maps a choice to its share; returns one choice. */
export function pickWeighted(rng, weights) {
  const entries = Object.entries(weights);
  const total = entries.reduce((s, [, w]) => s + w, 0);
  let u = rng.next() * total;
  for (const [k, w] of entries) if ((u -= w) < 0) return k;
  return entries.at(-1)[0];
}

export const DTYPES = {
  float32: { ctor: Float32Array, bytes: 4, limit: 2 ** 24, signed: true },
  float64: { ctor: Float64Array, bytes: 8, limit: 2 ** 40, signed: true },
  int32: { ctor: Int32Array, bytes: 4, limit: 2 ** 30, signed: true },
  int16: { ctor: Int16Array, bytes: 2, limit: 2 ** 15 - 1, signed: true },
  uint8: { ctor: Uint8Array, bytes: 1, limit: 255, signed: false },
};
/** float32 three times as often as each other dtype. */
export const drawDtype = (rng) => rng.pick(['float32', 'float32', 'float32', 'float64', 'int32', 'int16', 'uint8']);

const COMPRESSION_LIMIT = { fp16: 2048, bf16: 256 };

/** Element count for one rank's buffer: 0, a handful, or log-uniform bytes up to maxBytes. */
export function drawCount(rng, elemBytes, maxBytes, n) {
  const r = rng.next();
  if (r < 0.04) return 0;
  if (r < 0.12) return 1 + rng.int(2 * n + 3);
  return logUniform(rng, elemBytes, elemBytes, maxBytes);
}

/** Elements of `elemBytes` for a byte size log-uniform in [minBytes, maxBytes] (at least 1). */
export function logUniform(rng, elemBytes, minBytes, maxBytes) {
  const lo = Math.log(Math.max(elemBytes, minBytes));
  const hi = Math.log(Math.max(elemBytes, maxBytes));
  return Math.max(1, Math.floor(Math.exp(lo + rng.next() * (hi - lo)) / elemBytes));
}

/**
 * value(r, i): rank r's i-th input element, an integer such that every partial result of the
 * reduction `op` over n ranks stays exact in the dtype (and in fp16/bf16 under compression).
 * Without `op` any value of the dtype would do; the same bound keeps it simple.
 */
export function drawValue(rng, dtype, n, op = '', compression = 'none') {
  const dt = DTYPES[dtype];
  const a = 1 + rng.int(1_000_003);
  const b = rng.int(1_000_003);
  const c = 1 + rng.int(997);
  // Largest |value| such that every partial result of N values stays exact.
  const limit = Math.min(dt.limit, COMPRESSION_LIMIT[compression] ?? Infinity);
  const maxAbs = Math.max(n, Math.floor(limit / n));
  if (op === 'product') {
    return dt.signed ? (r, i) => ((i * a + b + r * c) % 4) - 1 : (r, i) => (i * a + b + r * c) % 3;
  }
  if (op === 'average') {
    // Rank offsets 2r-(N-1) sum to 0: the sum is N*base, the average exactly base.
    const lo = dt.signed ? -(maxAbs - (n - 1)) : n - 1;
    const span = (dt.signed ? 2 * (maxAbs - (n - 1)) : maxAbs - 2 * (n - 1)) + 1;
    return (r, i) => ((i * a + b) % span) + lo + 2 * r - (n - 1);
  }
  const lo = dt.signed ? -maxAbs : 0;
  const span = (dt.signed ? 2 * maxAbs : maxAbs) + 1;
  return (r, i) => ((i * a + b + r * c) % span) + lo;
}

export function fill(ctor, count, f) {
  const x = new ctor(count);
  for (let i = 0; i < count; i++) x[i] = f(i);
  return x;
}

/** Undefined if got has `length` elements and got[i] === want(i) for each, else the first difference. */
export function diff(got, length, want) {
  if (got?.length !== length) return `length ${got?.length}, want ${length}`;
  for (let i = 0; i < length; i++) {
    const w = want(i);
    if (got[i] !== w) return `element ${i}: got ${got[i]}, want ${w}`;
  }
  return undefined;
}

export const sum = (xs) => xs.reduce((s, x) => s + x, 0);

/**
 * want(k) for blocks laid end to end, block r of counts[r] elements whose i-th is f(r, i) (an
 * allgather's or an all-to-all's result). k must not decrease: diff() asks in order.
 */
export function blocks(counts, f) {
  let r = 0;
  let start = 0;
  return (k) => {
    while (k >= start + counts[r]) start += counts[r++];
    return f(r, k - start);
  };
}
