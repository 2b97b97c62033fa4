/**
 * Parity sweep: every native table (and the active, cut-over backend of index.ts) against the
 * TypeScript reference, bit for bit, over sizes {0,1,7,8,15,16,17,1023,2^20+3} x view offsets
 * (plus 2^22+5 for the decoders, whose native versions stream their stores from 16 MiB out).
 *
 * Offsets are in elements of the view's type (byte offsets {0,4,8,12} for 4-byte types, {0,8,..}
 * for float64, {0,2,4,6} for 2-byte, {0,1,2,3} for bytes); the 16-bit wire side of conversions is
 * also placed at odd byte offsets {1,3} (a ws Buffer slice can start anywhere). Each view sits in
 * a buffer with guard bytes on both sides, and the whole buffer is compared, so a write past
 * either end fails too.
 *
 * Bit for bit means: identical bytes, except that where arithmetic meets a NaN any NaN matches
 * any NaN (hardware and JIT may pick different NaN payloads for NaN + x). Pure conversions
 * (unscaled f32<->f16, f32<->bf16) are compared with NaN bits included.
 */
import { describe, expect, it } from 'vitest';

import { kernels as active } from '../src/kernels/index.js';
import { jsKernels } from '../src/kernels/js.js';
import { loadNativeKernels } from '../src/kernels/native.js';
import type { Kernels, ReduceOp } from '../src/kernels/types.js';

const native = loadNativeKernels();
const candidates: [string, Kernels][] = [];
if (native.ok) {
  candidates.push([`native ${native.kernels.isa}`, native.kernels]);
  if (native.kernels.isa !== 'portable') candidates.push(['native portable', native.portable]);
}
if (active.backend === 'native') candidates.push(['active (native + cut-over)', active]);

const SIZES = [0, 1, 7, 8, 15, 16, 17, 1023, (1 << 20) + 3];
const ELEM_OFFSETS = [0, 1, 2, 3];
const HALF_BYTE_OFFSETS = [0, 2, 4, 6, 1, 3];
const GUARD = 16;
const MAX_N = SIZES[SIZES.length - 1];

// ---- deterministic test data -------------------------------------------------------------------

let seed = 0x2545f491;
function next(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed;
}
const SPECIAL_F32 = [0, -0, Infinity, -Infinity, NaN, 2 ** -149, -(2 ** -126), 3.4028234663852886e38, 65504, 65520, -65519, 2 ** -25, 2 ** -24, 1e-30];

/** Float data: mostly ordinary values, some raw bit patterns (every class), some specials. */
function floatPool(n: number, ctor: Float32ArrayConstructor | Float64ArrayConstructor): Uint8Array {
  const x = new ctor(n);
  const bits = new Uint32Array(x.buffer);
  for (let i = 0; i < n; i++) {
    const r = next() % 10;
    if (r < 6) x[i] = ((next() / 2 ** 32) - 0.5) * 2 ** ((next() % 40) - 20);
    else if (r < 9) {
      if (ctor === Float32Array) bits[i] = next();
      else (bits[2 * i] = next()), (bits[2 * i + 1] = next());
    } else x[i] = SPECIAL_F32[next() % SPECIAL_F32.length];
  }
  return new Uint8Array(x.buffer);
}
function bitsPool(bytes: number): Uint8Array {
  const w = new Uint32Array(Math.ceil(bytes / 4));
  for (let i = 0; i < w.length; i++) w[i] = next();
  return new Uint8Array(w.buffer, 0, bytes);
}

const POOL_N = MAX_N + 64;
const POOLS = {
  f32: floatPool(POOL_N, Float32Array),
  f64: floatPool(POOL_N, Float64Array),
  bits: bitsPool(POOL_N * 8),
};

// ---- placing views in guarded buffers ------------------------------------------------------------

interface Placed {
  buf: ArrayBuffer;
  byteOffset: number;
  byteLength: number;
}

/** A buffer of guard bytes with `byteLength` bytes of `pool` (from `poolOffset`) at `byteOffset`. */
function place(pool: Uint8Array, poolOffset: number, byteOffset: number, byteLength: number): Placed {
  const buf = new ArrayBuffer(GUARD + byteOffset + byteLength + GUARD);
  const all = new Uint8Array(buf).fill(0xa5);
  all.set(pool.subarray(poolOffset, poolOffset + byteLength), GUARD + byteOffset);
  return { buf, byteOffset: GUARD + byteOffset, byteLength };
}
const copy = (p: Placed): Placed => ({ ...p, buf: p.buf.slice(0) });

type FloatCompare = 'f32' | 'f64' | 'f16' | 'bf16' | 'exact';

/** Whole-buffer comparison; inside the view, NaN matches NaN unless `how` is 'exact'. */
function expectSame(got: Placed, want: Placed, how: FloatCompare, label: string): void {
  if (Buffer.from(got.buf).equals(Buffer.from(want.buf))) return; // memcmp: the common case
  const g = new Uint8Array(got.buf);
  const w = new Uint8Array(want.buf);
  for (let i = 0; i < g.length; i++) {
    if (g[i] === w[i]) continue;
    const inView = i >= got.byteOffset && i < got.byteOffset + got.byteLength;
    const size = how === 'f64' ? 8 : how === 'f32' ? 4 : 2;
    if (inView && how !== 'exact') {
      const at = got.byteOffset + Math.floor((i - got.byteOffset) / size) * size;
      if (isNaNAt(g, at, how) && isNaNAt(w, at, how)) {
        i = at + size - 1;
        continue;
      }
    }
    expect.fail(`${label}: byte ${i - got.byteOffset} of the view (${inView ? 'inside' : 'OUTSIDE'}) is ${g[i]}, reference ${w[i]}`);
  }
}
function isNaNAt(b: Uint8Array, at: number, how: FloatCompare): boolean {
  const dv = new DataView(b.buffer, at);
  if (how === 'f32') return Number.isNaN(dv.getFloat32(0, true));
  if (how === 'f64') return Number.isNaN(dv.getFloat64(0, true));
  const h = dv.getUint16(0, true);
  return how === 'f16' ? (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0 : (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
}

const f32View = (p: Placed): Float32Array => new Float32Array(p.buf, p.byteOffset, p.byteLength / 4);
const byteView = (p: Placed): Uint8Array => new Uint8Array(p.buf, p.byteOffset, p.byteLength);

/** Runs `call` on fresh copies for the reference and the candidate and compares every buffer. */
function check(k: Kernels, label: string, args: Placed[], how: FloatCompare[], call: (k: Kernels, a: Placed[]) => unknown): void {
  const ref = args.map(copy);
  const got = args.map(copy);
  const r0 = call(jsKernels, ref);
  const r1 = call(k, got);
  if (r0 !== undefined || r1 !== undefined) expect(Object.is(r0, r1), `${label}: returned ${String(r1)}, reference ${String(r0)}`).toBe(true);
  args.forEach((_, i) => expectSame(got[i], ref[i], how[i], `${label} arg ${i}`));
}

// ---- the sweep ---------------------------------------------------------------------------------------

const DTYPES = [
  { name: 'float32', ctor: Float32Array, pool: 'f32', how: 'f32' },
  { name: 'float64', ctor: Float64Array, pool: 'f64', how: 'f64' },
  { name: 'int32', ctor: Int32Array, pool: 'bits', how: 'exact' },
  { name: 'uint32', ctor: Uint32Array, pool: 'bits', how: 'exact' },
  { name: 'int16', ctor: Int16Array, pool: 'bits', how: 'exact' },
  { name: 'uint16', ctor: Uint16Array, pool: 'bits', how: 'exact' },
  { name: 'int8', ctor: Int8Array, pool: 'bits', how: 'exact' },
  { name: 'uint8', ctor: Uint8Array, pool: 'bits', how: 'exact' },
] as const;
const OPS: ReduceOp[] = ['sum', 'min', 'max', 'product'];

describe.skipIf(candidates.length === 0)('parity with the TypeScript reference', () => {
  describe.each(candidates)('%s', (_name, k) => {
    it.each(DTYPES)('reduceInto, divideInPlace, scaleInPlace on $name', ({ ctor, pool, how }) => {
      const size = ctor.BYTES_PER_ELEMENT;
      for (const n of SIZES) {
        for (const off of ELEM_OFFSETS) {
          const dst = place(POOLS[pool], 0, off * size, n * size);
          const src = place(POOLS[pool], 40 * size, ((off + 1) % 4) * size, n * size);
          const view = (p: Placed) => new ctor(p.buf, p.byteOffset, n);
          for (const op of OPS) {
            check(k, `${op} n=${n} off=${off}`, [dst, src], [how, 'exact'], (kk, [d, s]) => kk.reduceInto(op, view(d), view(s)));
          }
          // Factors exact in float32 (3, 0.375) and not (0.1, 1/3): the native float32 kernels
          // take a float32 path for the former.
          for (const divisor of [3, 0.1]) {
            check(k, `divide by ${divisor} n=${n} off=${off}`, [dst], [how], (kk, [d]) => kk.divideInPlace(view(d), divisor));
          }
          if (ctor === Float32Array || ctor === Float64Array) {
            for (const factor of [0.375, 1 / 3]) {
              check(k, `scale by ${factor} n=${n} off=${off}`, [dst], [how], (kk, [d]) => kk.scaleInPlace(view(d) as Float32Array, factor));
            }
          }
        }
      }
    });

    it('maxAbsFinite (the pool slices hold Inf and NaNs of every payload, which it leaves out)', () => {
      for (const n of SIZES) {
        for (const off of ELEM_OFFSETS) {
          const x = place(POOLS.f32, 4 * off, 4 * off, 4 * n);
          check(k, `maxAbsFinite n=${n} off=${off}`, [x], ['exact'], (kk, [p]) => kk.maxAbsFinite(f32View(p)));
          // And without them (every finite magnitude counts).
          const clean = copy(x);
          const v = f32View(clean);
          for (let i = 0; i < v.length; i++) if (Number.isNaN(v[i])) v[i] = -i;
          check(k, `maxAbsFinite (finite only) n=${n} off=${off}`, [clean], ['exact'], (kk, [p]) => kk.maxAbsFinite(f32View(p)));
        }
      }
    });

    describe('conversions', () => {
      const cases = SIZES.flatMap((n) => HALF_BYTE_OFFSETS.map((hoff, j) => ({ n, hoff, foff: 4 * (j % 4) })));
      const scales = [1, 0.375, 2 ** -8, Math.fround(1 / 3)];

      it('f32 -> f16 (with and without scale), f32 -> bf16', () => {
        for (const { n, hoff, foff } of cases) {
          const src = place(POOLS.f32, foff, foff, 4 * n);
          const dst = place(POOLS.bits, 0, hoff, 2 * n);
          for (const scale of scales) {
            check(k, `f32ToF16 n=${n} half@${hoff} f32@${foff} scale=${scale}`, [dst, src], [scale === 1 ? 'exact' : 'f16', 'exact'], (kk, [d, s]) =>
              kk.f32ToF16(byteView(d), f32View(s), scale),
            );
          }
          check(k, `f32ToBf16 n=${n} half@${hoff} f32@${foff}`, [dst, src], ['exact', 'exact'], (kk, [d, s]) => kk.f32ToBf16(byteView(d), f32View(s)));
        }
      });

      it('decoders past the size where the native ones switch to streaming stores (16 MiB out)', () => {
        const n = (4 << 20) + 5;
        const halves = bitsPool(2 * n + 8);
        const zeros = new Uint8Array(4 * n + 64);
        for (const [hoff, foff] of [[0, 0], [1, 4], [6, 12]]) {
          const src = place(halves, 0, hoff, 2 * n);
          const dst = place(zeros, 0, foff, 4 * n);
          for (const scale of [1, 0.375]) {
            check(k, `f16ToF32 n=${n} half@${hoff} f32@${foff} scale=${scale}`, [dst, src], [scale === 1 ? 'exact' : 'f32', 'exact'], (kk, [d, s]) =>
              kk.f16ToF32(f32View(d), byteView(s), scale),
            );
          }
          check(k, `bf16ToF32 n=${n} half@${hoff} f32@${foff}`, [dst, src], ['exact', 'exact'], (kk, [d, s]) => kk.bf16ToF32(f32View(d), byteView(s)));
        }
      });

      it('f16 -> f32 and acc += f16 (with and without scale); bf16 -> f32 and acc += bf16', () => {
        for (const { n, hoff, foff } of cases) {
          const src = place(POOLS.bits, 3, hoff, 2 * n);
          const dst = place(POOLS.f32, 0, foff, 4 * n);
          for (const scale of scales) {
            check(k, `f16ToF32 n=${n} half@${hoff} f32@${foff} scale=${scale}`, [dst, src], [scale === 1 ? 'exact' : 'f32', 'exact'], (kk, [d, s]) =>
              kk.f16ToF32(f32View(d), byteView(s), scale),
            );
            check(k, `addF16Into n=${n} half@${hoff} f32@${foff} scale=${scale}`, [dst, src], ['f32', 'exact'], (kk, [d, s]) =>
              kk.addF16Into(f32View(d), byteView(s), scale),
            );
            check(k, `addF16IntoMax n=${n} half@${hoff} f32@${foff} scale=${scale}`, [dst, src], ['f32', 'exact'], (kk, [d, s]) =>
              kk.addF16IntoMax(f32View(d), byteView(s), scale),
            );
          }
          check(k, `bf16ToF32 n=${n} half@${hoff} f32@${foff}`, [dst, src], ['exact', 'exact'], (kk, [d, s]) => kk.bf16ToF32(f32View(d), byteView(s)));
          check(k, `addBf16Into n=${n} half@${hoff} f32@${foff}`, [dst, src], ['f32', 'exact'], (kk, [d, s]) => kk.addBf16Into(f32View(d), byteView(s)));
        }
      });
    });
  });
});
