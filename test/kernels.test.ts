/**
 * One suite, run against every backend: the TypeScript reference, the native addon as selected
 * for this CPU (avx2+f16c here), the addon's portable C++ table, and the active `kernels` of
 * src/kernels/index.ts (native with small inputs routed to TypeScript). Bit-for-bit parity between
 * them is kernels-parity.test.ts; fp16/bf16 against an independent reference is kernels-half.test.ts.
 */
import { Worker } from 'node:worker_threads';

import { describe, expect, it, vi } from 'vitest';

import type { NumericArray } from '../src/dtypes.js';
import { RingInternalError } from '../src/errors.js';
import * as api from '../src/kernels/index.js';
import { jsKernels } from '../src/kernels/js.js';
import { loadNativeKernels } from '../src/kernels/native.js';
import type { Kernels } from '../src/kernels/types.js';

const native = loadNativeKernels();
const backends: [string, Kernels][] = [['js', jsKernels]];
if (native.ok) {
  backends.push([`native ${native.kernels.isa}`, native.kernels]);
  if (native.kernels.isa !== 'portable') backends.push(['native portable', native.portable]);
}
backends.push([`active (${api.kernels.backend})`, api.kernels]);

const f32 = (...v: number[]): Float32Array => new Float32Array(v);
const bytesOfHalves = (...h: number[]): Uint8Array => new Uint8Array(new Uint16Array(h).buffer);
const halvesOf = (b: Uint8Array): number[] => Array.from(new Uint16Array(b.slice().buffer));
/** Long enough that every backend takes its SIMD body and its scalar tail. */
const repeat = <T extends NumericArray>(x: T, times = 40): T => {
  const out = new (x.constructor as new (n: number) => T)(x.length * times);
  for (let i = 0; i < times; i++) out.set(x, i * x.length);
  return out;
};
const head = (x: ArrayLike<number>, n: number): number[] => Array.from(x).slice(0, n);

describe.each(backends)('kernels: %s', (_name, k) => {
  describe('reduceInto', () => {
    it('sums floats in IEEE float32 and float64', () => {
      const d = repeat(f32(1.5, -2, 3, 1e30, 0.1));
      k.reduceInto('sum', d, repeat(f32(0.25, 2, -3, 1e30, 0.2)));
      expect(head(d, 5)).toEqual([1.75, 0, 0, Math.fround(2e30), Math.fround(Math.fround(0.1) + Math.fround(0.2))]);
      const e = repeat(new Float64Array([0.1, -1]));
      k.reduceInto('average', e, repeat(new Float64Array([0.2, 1])));
      expect(head(e, 2)).toEqual([0.1 + 0.2, 0]);
    });

    it('wraps integer sums and products like the element type', () => {
      const cases: [NumericArray, NumericArray, 'sum' | 'product', number[]][] = [
        [new Int32Array([0x7fffffff, -5]), new Int32Array([1, 3]), 'sum', [-0x80000000, -2]],
        [new Uint32Array([0xffffffff, 7]), new Uint32Array([2, 3]), 'sum', [1, 10]],
        [new Int32Array([65537, -3]), new Int32Array([65537, 5]), 'product', [Math.imul(65537, 65537), -15]],
        [new Uint32Array([0xffffffff, 0x10000]), new Uint32Array([2, 0x10000]), 'product', [0xfffffffe, 0]],
        [new Int16Array([32767, -300]), new Int16Array([1, 300]), 'product', [32767, (-90000 << 16) >> 16]],
        [new Uint16Array([65535, 300]), new Uint16Array([65535, 300]), 'product', [1, 90000 & 0xffff]],
        [new Int8Array([127, 100]), new Int8Array([1, 3]), 'sum', [-128, 103]],
        [new Int8Array([100, -7]), new Int8Array([3, 9]), 'product', [44, -63]],
        [new Uint8Array([250, 16]), new Uint8Array([10, 16]), 'sum', [4, 32]],
        [new Uint8Array([250, 16]), new Uint8Array([10, 16]), 'product', [196, 0]],
      ];
      for (const [d0, s0, op, want] of cases) {
        const d = repeat(d0);
        k.reduceInto(op, d, repeat(s0));
        expect(head(d, 2), `${d0.constructor.name} ${op}`).toEqual(want);
        expect(Array.from(d.slice(-2))).toEqual(want);
      }
    });

    it('min and max propagate NaN from either side and keep dst on ±0 ties', () => {
      for (const op of ['min', 'max'] as const) {
        const d = repeat(f32(NaN, 1, 0, -0, 5, -Infinity));
        k.reduceInto(op, d, repeat(f32(1, NaN, -0, 0, 2, Infinity)));
        const want = op === 'min' ? [NaN, NaN, 0, -0, 2, -Infinity] : [NaN, NaN, 0, -0, 5, Infinity];
        for (let i = 0; i < d.length; i++) expect(Object.is(d[i], want[i % 6]), `${op} at ${i}: ${d[i]}`).toBe(true);
      }
      const i = repeat(new Int16Array([-3, 4]));
      k.reduceInto('max', i, repeat(new Int16Array([2, -9])));
      expect(head(i, 2)).toEqual([2, 4]);
    });

    it('multiplies float32 with one rounding', () => {
      const a = [1.1, 3e-39, 1e20, -7.25];
      const b = [3.3, 0.5, 1e20, 0.1];
      const d = repeat(f32(...a));
      k.reduceInto('product', d, repeat(f32(...b)));
      expect(head(d, 4)).toEqual(a.map((x, j) => Math.fround(Math.fround(x) * Math.fround(b[j]))));
    });

    it('accepts the same view as dst and src', () => {
      const d = repeat(f32(1, 2, 3));
      k.reduceInto('sum', d, d);
      expect(head(d, 3)).toEqual([2, 4, 6]);
    });

    it('handles empty arrays', () => {
      k.reduceInto('sum', new Float32Array(0), new Float32Array(0));
      k.reduceInto('max', new Int8Array(0), new Int8Array(0));
    });
  });

  it('divideInPlace rounds floats once and truncates integers toward zero', () => {
    const x = repeat(f32(1, 10, -7));
    k.divideInPlace(x, 3);
    expect(head(x, 3)).toEqual([Math.fround(1 / 3), Math.fround(10 / 3), Math.fround(-7 / 3)]);
    const i = repeat(new Int32Array([-7, 7, 2147483647]));
    k.divideInPlace(i, 2);
    expect(head(i, 3)).toEqual([-3, 3, 1073741823]);
  });

  it('scaleInPlace multiplies in double and rounds once', () => {
    const x = repeat(f32(1, 10, -7, 3e38));
    k.scaleInPlace(x, 1 / 3);
    expect(head(x, 4)).toEqual([1, 10, -7, 3e38].map((v) => Math.fround(Math.fround(v) * (1 / 3))));
    const y = repeat(new Float64Array([3, 1e308]));
    k.scaleInPlace(y, 4);
    expect(head(y, 2)).toEqual([12, Infinity]);
  });

  it('maxAbsFinite finds the largest finite magnitude; Inf and NaN (any payload, either sign) are left out', () => {
    expect(k.maxAbsFinite(new Float32Array(0))).toBe(0);
    expect(k.maxAbsFinite(repeat(f32(-0)))).toBe(0);
    expect(k.maxAbsFinite(f32(1, -3.5, 2))).toBe(3.5);
    const x = repeat(f32(1, -3.5, 2), 50);
    x[77] = -1e6;
    expect(k.maxAbsFinite(x)).toBe(1e6);
    x[93] = -Infinity;
    x[94] = Infinity;
    expect(k.maxAbsFinite(x)).toBe(1e6);
    x[131] = NaN;
    const bits = new Uint32Array(x.buffer);
    bits[5] = 0xffc00001; // a negative NaN with a payload
    bits[6] = 0x7f800001; // a signalling NaN
    expect(k.maxAbsFinite(x)).toBe(1e6);
    x[140] = -3.4028234663852886e38; // the largest finite float32
    expect(k.maxAbsFinite(x)).toBe(3.4028234663852886e38);
    expect(k.maxAbsFinite(f32(NaN, Infinity))).toBe(0);
    // At every position of a head, a vector body and a tail (200 elements: past the cut-over to native).
    for (let at = 0; at < 200; at++) {
      const y = new Float32Array(200).fill(0.25);
      y[at] = at % 3 === 0 ? Infinity : at % 3 === 1 ? -Infinity : NaN;
      y[(at + 97) % 200] = -2;
      expect(k.maxAbsFinite(y), `non-finite at ${at}`).toBe(2);
      expect(k.maxAbsFinite(y.subarray(1)), `non-finite at ${at}, unaligned`).toBe(at === 103 ? 0.25 : 2);
    }
  });

  describe('fp16', () => {
    it('encodes and decodes exact values, ±0, ±Inf, subnormals', () => {
      const values = [0, -0, 1, -2, 65504, -65504, Infinity, -Infinity, 2 ** -14, 2 ** -24, -(2 ** -24), 1023 * 2 ** -24];
      const halves = [0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x0400, 0x0001, 0x8001, 0x03ff];
      const src = repeat(f32(...values));
      const enc = new Uint8Array(src.length * 2);
      k.f32ToF16(enc, src, 1);
      expect(halvesOf(enc).slice(0, halves.length)).toEqual(halves);
      const dec = new Float32Array(src.length);
      k.f16ToF32(dec, enc, 1);
      for (let i = 0; i < dec.length; i++) expect(Object.is(dec[i], src[i])).toBe(true);
    });

    it('rounds to nearest even, overflows to Inf, underflows to 0', () => {
      const cases: [number, number][] = [
        [1 + 2 ** -11, 0x3c00], // tie -> even (1.0)
        [1 + 3 * 2 ** -11, 0x3c02], // tie -> even (1 + 2^-9)
        [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above the tie
        [65519, 0x7bff],
        [65520, 0x7c00], // the tie between 65504 and 2^16 goes to Inf
        [1e10, 0x7c00],
        [-1e10, 0xfc00],
        [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal -> 0
        [-(2 ** -25), 0x8000],
        [2 ** -25 + 2 ** -40, 0x0001],
        [3 * 2 ** -25, 0x0002], // tie -> even
        [2 ** -14 - 2 ** -25, 0x0400], // tie between the largest subnormal and the smallest normal
        [1e-10, 0x0000],
      ];
      const src = repeat(f32(...cases.map((c) => c[0])));
      const enc = new Uint8Array(src.length * 2);
      k.f32ToF16(enc, src, 1);
      expect(halvesOf(enc).slice(0, cases.length)).toEqual(cases.map((c) => c[1]));
    });

    it('keeps NaN a NaN: quiet, same sign, top payload bits', () => {
      const bits = new Uint32Array([0x7fc00000, 0xffc00001, 0x7f800001, 0x7fa02000, 0xff802000]);
      const src = repeat(new Float32Array(bits.buffer));
      const enc = new Uint8Array(src.length * 2);
      k.f32ToF16(enc, src, 1);
      expect(halvesOf(enc).slice(0, 5)).toEqual([0x7e00, 0xfe00, 0x7e00, 0x7f01, 0xfe01]);
      const dec = new Float32Array(3 * 40);
      k.f16ToF32(dec, repeat(bytesOfHalves(0x7c01, 0xfe00, 0x7fff)), 1);
      expect(Array.from(new Uint32Array(dec.buffer).slice(0, 3))).toEqual([0x7fc02000, 0xffc00000, 0x7fffe000]);
    });

    it('scales on encode and on decode; scale 1 is the plain conversion', () => {
      const src = repeat(f32(100000, -3, 0.5));
      const enc = new Uint8Array(src.length * 2);
      k.f32ToF16(enc, src, 1 / 4);
      expect(halvesOf(enc).slice(0, 3)).toEqual([0x761a, 0xba00, 0x3000]); // 24992 (nearest to 25000), -0.75, 0.125
      const dec = new Float32Array(src.length);
      k.f16ToF32(dec, enc, 4);
      expect(head(dec, 3)).toEqual([99968, -3, 0.5]);
    });

    it('addF16Into adds the decoded (and scaled) chunk into the accumulator', () => {
      const acc = repeat(f32(1, 2, 3, NaN));
      const src = repeat(bytesOfHalves(0x3c00, 0xc000, 0x7c00, 0x3c00)); // 1, -2, Inf, 1
      k.addF16Into(acc, src, 1);
      expect(head(acc, 4)).toEqual([2, 0, Infinity, NaN]);
      const acc2 = repeat(f32(1, 2, 3, 4));
      k.addF16Into(acc2, src, 0.5);
      expect(head(acc2, 4)).toEqual([1.5, 1, Infinity, 4.5]);
    });

    it('reads and writes 16-bit words at odd byte offsets', () => {
      const src = repeat(f32(1, -2, 0.5, 3), 11);
      const buf = new Uint8Array(src.length * 2 + 3).fill(0xaa);
      const enc = buf.subarray(1, 1 + src.length * 2);
      k.f32ToF16(enc, src, 1);
      expect([buf[0], buf[buf.length - 2], buf[buf.length - 1]]).toEqual([0xaa, 0xaa, 0xaa]);
      expect([enc[0], enc[1], enc[2], enc[3]]).toEqual([0x00, 0x3c, 0x00, 0xc0]);
      const dec = new Float32Array(src.length);
      k.f16ToF32(dec, enc, 1);
      expect(dec).toEqual(src);
      const acc = new Float32Array(src.length).fill(1);
      k.addF16Into(acc, enc, 1);
      expect(head(acc, 4)).toEqual([2, -1, 1.5, 4]);
    });
  });

  describe('bf16', () => {
    it('rounds to nearest even, keeps NaN, overflows to Inf', () => {
      const bits = new Uint32Array([
        0x3f800000, // 1
        0x3f808000, // tie -> even 0x3f80
        0x3f818000, // tie -> even 0x3f82
        0x3f808001, // above the tie
        0x7f7fffff, // max float rounds to Inf
        0xff7f8000, // tie at the top -> -Inf
        0x7f800000,
        0x7f800001, // NaN with payload only in the dropped bits stays NaN
        0xffc12345,
        0x80000000,
        0x00008000, // subnormal tie -> 0
      ]);
      const src = repeat(new Float32Array(bits.buffer));
      const enc = new Uint8Array(src.length * 2);
      k.f32ToBf16(enc, src);
      expect(halvesOf(enc).slice(0, bits.length)).toEqual([
        0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x7f80, 0xff80, 0x7f80, 0x7fc0, 0xffc1, 0x8000, 0x0000,
      ]);
      const dec = new Float32Array(src.length);
      k.bf16ToF32(dec, enc);
      expect(Array.from(new Uint32Array(dec.buffer).slice(0, 3))).toEqual([0x3f800000, 0x3f800000, 0x3f820000]);
      const acc = repeat(f32(1, 2, 3));
      k.addBf16Into(acc, repeat(bytesOfHalves(0x3f80, 0xc000, 0x4040)));
      expect(head(acc, 3)).toEqual([2, 0, 6]);
    });
  });
});

describe.skipIf(!native.ok)('native addon', () => {
  if (!native.ok) return;
  const k = native.kernels;

  it('rejects what it must not run as a JS TypeError, never a crash', () => {
    const bad: [string, () => void][] = [
      ['length mismatch', () => k.reduceInto('sum', new Float32Array(4), new Float32Array(3))],
      ['type mismatch', () => k.reduceInto('sum', new Float32Array(4), new Int32Array(4))],
      ['clamped array', () => k.reduceInto('sum', new Uint8ClampedArray(4) as unknown as Uint8Array, new Uint8ClampedArray(4) as unknown as Uint8Array)],
      ['not an array', () => k.reduceInto('sum', {} as Float32Array, new Float32Array(1))],
      ['unknown op', () => k.reduceInto('mean' as 'sum', new Float32Array(1), new Float32Array(1))],
      ['odd byte count', () => k.f16ToF32(new Float32Array(2), new Uint8Array(3), 1)],
      ['short 16-bit side', () => k.f32ToF16(new Uint8Array(6), new Float32Array(4), 1)],
      ['float64 accumulator', () => k.addF16Into(new Float64Array(2) as unknown as Float32Array, new Uint8Array(4), 1)],
      ['scale not a number', () => k.addF16Into(new Float32Array(2), new Uint8Array(4), 'x' as unknown as number)],
      ['int array to scale', () => k.scaleInPlace(new Int32Array(2) as unknown as Float32Array, 2)],
    ];
    for (const [what, call] of bad) expect(call, what).toThrow(TypeError);
  });

  it('works on SharedArrayBuffer views (the engine hands tensors over in them)', () => {
    const acc = new Float32Array(new SharedArrayBuffer(4 * 100)).fill(1);
    const wire = new Uint8Array(new SharedArrayBuffer(2 * 100 + 1), 1, 200);
    k.f32ToF16(wire, new Float32Array(100).fill(2), 1);
    k.addF16Into(acc, wire, 1);
    expect(acc.every((v) => v === 3)).toBe(true);
  });

  it('loads and runs in a worker thread (the comm thread does)', async () => {
    const addonUrl = new URL('../native-bindings/build/Release/ringreduce_kernels.node', import.meta.url);
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require(workerData);
      const a = new Float32Array(20).fill(1.5);
      addon.reduce(0, a, new Float32Array(20).fill(2));
      parentPort.postMessage({ isa: addon.isa, v: a[19] });`;
    const w = new Worker(code, { eval: true, workerData: addonUrl.pathname });
    const msg = await new Promise((resolve, reject) => w.once('message', resolve).once('error', reject));
    await w.terminate();
    expect(msg).toEqual({ isa: k.isa, v: 3.5 });
  });
});

describe('kernels module (src/kernels/index.ts)', () => {
  it('says which backend is active and why', () => {
    expect(['js', 'native']).toContain(api.kernels.backend);
    expect(api.describeKernels()).toMatch(/^(native \(.+\)|js \(.+\))$/);
    if (api.kernels.backend === 'js') expect(api.kernels.nativeError).toBeTruthy();
    else expect(api.kernels.nativeError).toBeUndefined();
  });

  it('RINGREDUCE_NO_NATIVE=1 forces the TypeScript kernels', async () => {
    vi.stubEnv('RINGREDUCE_NO_NATIVE', '1');
    vi.resetModules();
    try {
      const fresh = await import('../src/kernels/index.js');
      expect(fresh.kernels.backend).toBe('js');
      expect(fresh.kernels.nativeError).toMatch(/RINGREDUCE_NO_NATIVE/);
      expect(fresh.describeKernels()).toBe('js (disabled by RINGREDUCE_NO_NATIVE)');
    } finally {
      vi.unstubAllEnvs();
      vi.resetModules();
    }
  });

  it.runIf(native.ok)('uses the addon when it loads and RINGREDUCE_NO_NATIVE is unset', async () => {
    vi.stubEnv('RINGREDUCE_NO_NATIVE', '');
    vi.stubEnv('RINGREDUCE_TIMEOUT', 'not-a-number'); // init()'s business: loading the kernels never throws
    vi.resetModules();
    try {
      const fresh = await import('../src/kernels/index.js');
      expect(fresh.kernels.backend).toBe('native');
      expect(fresh.describeKernels()).toMatch(/^native \((avx2\+f16c|portable)\)$/);
    } finally {
      vi.unstubAllEnvs();
      vi.resetModules();
    }
  });

  it('validates arguments with errors that name the function', () => {
    const cases: [RegExp, () => void][] = [
      [/reduceInto: Float32Array\[2\] vs Float64Array\[2\]/, () => api.reduceInto('sum', new Float32Array(2), new Float64Array(2))],
      [/reduceInto: dst and src partially overlap/, () => {
        const b = new Float32Array(8);
        api.reduceInto('sum', b.subarray(0, 4), b.subarray(2, 6));
      }],
      [/f32ToF16: the 16-bit side must be a Uint8Array of 8 bytes/, () => api.f32ToF16(new Uint8Array(6), new Float32Array(4))],
      [/f16ToF32: expected a Float32Array, got Float64Array\[2\]/, () => api.f16ToF32(new Float64Array(2) as unknown as Float32Array, new Uint8Array(4))],
      [/addF16Into: the 16-bit and float32 sides overlap/, () => {
        const acc = new Float32Array(4);
        api.addF16Into(acc.subarray(0, 2), new Uint8Array(acc.buffer, 4, 4));
      }],
      [/scaleInPlace: expected a Float32Array or Float64Array/, () => api.scaleInPlace(new Int32Array(2) as unknown as Float32Array, 2)],
      [/maxAbsFinite: expected a Float32Array/, () => api.maxAbsFinite([1, 2] as unknown as Float32Array)],
    ];
    for (const [msg, call] of cases) {
      expect(call).toThrow(RingInternalError);
      expect(call).toThrow(msg);
    }
  });

  it('takes the 16-bit side as bytes at any offset or as a Uint16Array; scale defaults to 1', () => {
    const src = f32(1, -2, 0.5);
    const words = new Uint16Array(3);
    api.f32ToF16(words, src);
    expect(Array.from(words)).toEqual([0x3c00, 0xc000, 0x3800]);
    const acc = f32(1, 1, 1);
    api.addF16Into(acc, words);
    api.addF16Into(acc, new Uint8Array(words.buffer), 2);
    expect(Array.from(acc)).toEqual([4, -5, 2.5]);
    const back = new Float32Array(3);
    api.bf16ToF32(back, (() => { const w = new Uint16Array(3); api.f32ToBf16(w, src); return w; })());
    expect(back).toEqual(src);
    expect(api.maxAbsFinite(src)).toBe(2);
    api.scaleInPlace(back, 2);
    expect(Array.from(back)).toEqual([2, -4, 1]);
  });
});
