/**
 * fp16 and bf16 conversions against an independent reference: values computed with plain
 * arithmetic (m * 2^e), and rounding done by searching the sorted table of representable values
 * and comparing distances — no bit tricks shared with the kernels under test.
 *
 * Covered for every backend: all 65,536 fp16 patterns decode to the right value and round-trip;
 * every fp16 rounding midpoint (and its float32 neighbours) in both signs; overflow to Inf;
 * subnormals; NaN; the same for bf16; plus random float32 bit patterns.
 */
import { describe, expect, it } from 'vitest';

import { jsKernels } from '../src/kernels/js.js';
import { loadNativeKernels } from '../src/kernels/native.js';
import type { Kernels } from '../src/kernels/types.js';

const native = loadNativeKernels();
const backends: [string, Kernels][] = [['js', jsKernels]];
if (native.ok) {
  backends.push([`native ${native.kernels.isa}`, native.kernels]);
  if (native.kernels.isa !== 'portable') backends.push(['native portable', native.portable]);
}

// ---- the reference -----------------------------------------------------------------------------

/** The value of a binary16 pattern, from the definition. */
function halfValue(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 31) return m ? NaN : s * Infinity;
  return e === 0 ? s * m * 2 ** -24 : s * 2 ** (e - 15) * (1 + m / 1024);
}

/** Non-negative halves in value order; index 0x7c00 stands for 2^16, where Inf sits for rounding. */
const POSITIVE = Array.from({ length: 0x7c01 }, (_, k) => (k === 0x7c00 ? 65536 : halfValue(k)));

/** Round to nearest binary16, ties to even, by searching the value table. */
function refF16(v: number): number {
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65536) return sign | 0x7c00;
  let lo = 0;
  let hi = 0x7c00; // invariant: POSITIVE[lo] <= a < POSITIVE[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (POSITIVE[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dLo = a - POSITIVE[lo];
  const dHi = POSITIVE[hi] - a;
  const k = dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi;
  return sign | k;
}

/** Round a float32 (given as bits) to nearest bfloat16 by comparing distances to the two neighbours. */
function refBf16(bits: number): number {
  const lo = bits >>> 16; // toward zero
  const hi = lo + 1; // away from zero (may be Inf, which sits at 2^128 for rounding)
  const val = (b: number): number => {
    if ((b & 0x7fff) === 0x7f80) return (b & 0x8000 ? -1 : 1) * 2 ** 128;
    return f32FromBits(b << 16);
  };
  const v = f32FromBits(bits);
  const dLo = Math.abs(v - val(lo));
  const dHi = Math.abs(val(hi) - v);
  return dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi;
}

const cell = new Float32Array(1);
const cellBits = new Uint32Array(cell.buffer);
function f32FromBits(b: number): number {
  cellBits[0] = b;
  return cell[0];
}
function bitsOfF32(v: number): number {
  cell[0] = v;
  return cellBits[0];
}
const isHalfNaN = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

/** Deterministic xorshift, so a failure reproduces. */
function randomBits(n: number, seed = 0x9e3779b9): Uint32Array {
  const out = new Uint32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s;
  }
  return out;
}

/** Every fp16 rounding midpoint (both signs), each with its float32 neighbours on either side. */
function midpointInputs(): Float32Array {
  const out: number[] = [];
  for (let k = 0; k < 0x7c00; k++) {
    const m = (POSITIVE[k] + POSITIVE[k + 1]) / 2; // 12 significant bits: exact in float32
    const b = bitsOfF32(m);
    for (const x of [f32FromBits(b - 1), m, f32FromBits(b + 1)]) out.push(x, -x);
  }
  return new Float32Array(out);
}

function encodeF16(k: Kernels, x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  k.f32ToF16(new Uint8Array(out.buffer), x, 1);
  return out;
}

// ---- the checks ---------------------------------------------------------------------------------

describe.each(backends)('fp16 against the reference: %s', (_name, k) => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const decoded = new Float32Array(65536);
  k.f16ToF32(decoded, new Uint8Array(all.buffer), 1);

  it('decodes all 65,536 patterns to their value (NaN to a quiet NaN with the same sign and payload)', () => {
    const bits = new Uint32Array(decoded.buffer);
    for (let h = 0; h < 65536; h++) {
      const want = halfValue(h);
      if (Number.isNaN(want)) {
        expect(bits[h], `h=0x${h.toString(16)}`).toBe((((h & 0x8000) << 16) | 0x7fc00000 | ((h & 0x3ff) << 13)) >>> 0);
      } else if (!Object.is(decoded[h], want)) {
        expect.fail(`h=0x${h.toString(16)}: got ${decoded[h]}, want ${want}`);
      }
    }
  });

  it('round-trips all 65,536 patterns f16 -> f32 -> f16 (NaN comes back quiet)', () => {
    const back = encodeF16(k, decoded);
    for (let h = 0; h < 65536; h++) {
      const want = isHalfNaN(h) ? h | 0x200 : h;
      if (back[h] !== want) expect.fail(`h=0x${h.toString(16)} came back as 0x${back[h].toString(16)}`);
    }
  });

  it('rounds every midpoint to even and its neighbours to the nearer half', () => {
    const x = midpointInputs();
    const got = encodeF16(k, x);
    let ties = 0;
    for (let i = 0; i < x.length; i++) {
      const want = refF16(x[i]);
      if (got[i] !== want) expect.fail(`${x[i]} (0x${bitsOfF32(x[i]).toString(16)}): got 0x${got[i].toString(16)}, want 0x${want.toString(16)}`);
      if ((i % 6 === 2 || i % 6 === 3) && (want & 1) === 0) ties++; // x = a midpoint
    }
    expect(ties).toBe(2 * 0x7c00); // every midpoint went to the even side
  });

  it('overflows to Inf and underflows through the subnormals exactly', () => {
    const x = new Float32Array([
      65504, 65519.99609375, 65520, 65535, 65536, 1e20, 3.4028234663852886e38, Infinity,
      2 ** -24, 2 ** -25, f32FromBits(bitsOfF32(2 ** -25) + 1), 2 ** -26, 2 ** -126, 2 ** -149, 0,
      2 ** -14, 2 ** -14 - 2 ** -24, 2 ** -14 - 2 ** -25, 1.5 * 2 ** -24, 2.5 * 2 ** -24,
    ]);
    const both = new Float32Array([...x, ...x.map((v) => -v)]);
    const got = encodeF16(k, both);
    expect(Array.from(got)).toEqual(Array.from(both, refF16));
    expect(Array.from(got.slice(0, 8))).toEqual([0x7bff, 0x7bff, 0x7c00, 0x7c00, 0x7c00, 0x7c00, 0x7c00, 0x7c00]);
  });

  it('keeps every NaN class a NaN (sign kept, quiet, top payload bits)', () => {
    const bits = new Uint32Array([0x7f800001, 0x7fbfffff, 0x7fc00000, 0x7fffffff, 0x7f802000, 0xff800001, 0xffc00000, 0xffffe000]);
    const got = encodeF16(k, new Float32Array(bits.buffer));
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i];
      expect(got[i]).toBe(((b >>> 16) & 0x8000) | 0x7e00 | ((b >>> 13) & 0x3ff));
    }
  });

  it('agrees with the reference on 200,000 random float32 bit patterns', () => {
    const b = randomBits(200_000);
    const x = new Float32Array(b.buffer);
    const got = encodeF16(k, x);
    for (let i = 0; i < x.length; i++) {
      if (Number.isNaN(x[i])) {
        if (!isHalfNaN(got[i]) || (got[i] & 0x8000) !== ((b[i] >>> 16) & 0x8000)) expect.fail(`NaN 0x${b[i].toString(16)}`);
      } else if (got[i] !== refF16(x[i])) {
        expect.fail(`0x${b[i].toString(16)}: got 0x${got[i].toString(16)}, want 0x${refF16(x[i]).toString(16)}`);
      }
    }
  });
});

describe.each(backends)('bf16 against the reference: %s', (_name, k) => {
  function encode(x: Float32Array): Uint16Array {
    const out = new Uint16Array(x.length);
    k.f32ToBf16(new Uint8Array(out.buffer), x);
    return out;
  }

  it('decodes all 65,536 patterns exactly (NaN bits included)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const out = new Float32Array(65536);
    k.bf16ToF32(out, new Uint8Array(all.buffer));
    const bits = new Uint32Array(out.buffer);
    for (let h = 0; h < 65536; h++) if (bits[h] !== (h << 16) >>> 0) expect.fail(`bf16 0x${h.toString(16)}`);
    // ...and every non-NaN pattern round-trips
    const back = encode(out);
    for (let h = 0; h < 65536; h++) {
      const nan = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
      if (back[h] !== (nan ? h | 0x40 : h)) expect.fail(`bf16 0x${h.toString(16)} came back as 0x${back[h].toString(16)}`);
    }
  });

  it('rounds every midpoint to even and its neighbours to the nearer value; overflows to Inf', () => {
    const inputs: number[] = [];
    for (let h = 0; h < 0x7f80; h++) {
      for (const s of [0, 0x8000]) {
        const mid = (((h | s) << 16) | 0x8000) >>> 0;
        inputs.push(mid - 1, mid, mid + 1);
      }
    }
    const bits = new Uint32Array(inputs);
    const got = encode(new Float32Array(bits.buffer));
    for (let i = 0; i < bits.length; i++) {
      const want = refBf16(bits[i]);
      if (got[i] !== want) expect.fail(`0x${bits[i].toString(16)}: got 0x${got[i].toString(16)}, want 0x${want.toString(16)}`);
    }
    expect(got[(0x7f7f * 2) * 3 + 1]).toBe(0x7f80); // the midpoint above the largest finite -> Inf
  });

  it('keeps NaN a NaN (quiet, sign kept) and agrees on 200,000 random patterns', () => {
    const b = randomBits(200_000, 12345);
    const got = encode(new Float32Array(b.buffer));
    for (let i = 0; i < b.length; i++) {
      const nan = (b[i] & 0x7fffffff) > 0x7f800000;
      const want = nan ? ((b[i] >>> 16) | 0x40) & 0xffff : refBf16(b[i]);
      if (got[i] !== want) expect.fail(`0x${b[i].toString(16)}: got 0x${got[i].toString(16)}, want 0x${want.toString(16)}`);
    }
  });
});
