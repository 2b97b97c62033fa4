import { afterAll, describe, expect, it, vi } from 'vitest';
import { codecsWith, type Codec } from '../src/compression/codec.js';
import { chunkRange, segmentRange } from '../src/collectives/schedule.js';
import type { RingGroup } from '../src/index.js';
import { jsKernels } from '../src/kernels/js.js';
import { loadNativeKernels } from '../src/kernels/native.js';
import type { Kernels } from '../src/kernels/types.js';
import { withDeadline } from './helpers/reference.js';

/**
 * Issue 14, row 8: with fp16 compression one Inf or NaN on one rank made all 1,000 other elements
 * of its chunk that needed scaling non-finite (the chunk's scale came from max |x|, which the Inf
 * or NaN set to itself, so the chunk went unscaled and values beyond fp16's range became Inf).
 * Now the scale comes from the finite elements only (maxAbsFinite, in every backend), and a
 * non-finite element stays confined to itself:
 *
 *   - every other element is exactly what it is without the non-finite one (bit for bit: a run
 *     with 0 there instead gives the same bits), and within the stated rounding of a float64
 *     reference (README "Compression": N·u·Σ|x| + N·2^-39·M for fp16, u = 2^-11 fp16, 2^-8 bf16,
 *     plus float32 accumulation N·2^-24·Σ|x|, M the largest finite |partial sum| of the chunk);
 *   - the non-finite element is what IEEE arithmetic gives (Inf + x = Inf, Inf + -Inf = NaN, NaN
 *     stays NaN; max(-Inf, x) = x), on every rank the same bits.
 *
 * Twice over: the codecs on one chunk, through each kernel table (TypeScript, native as selected
 * for this CPU, native portable); and real ring all-reduces (N = 2, 3; sum, average, max) with the
 * native kernels and with the TypeScript fallback (RINGREDUCE_NO_NATIVE=1, a fresh module graph).
 * Inf, -Inf and NaN sit at chunk starts, ends and middles.
 */
const U = { fp16: 2 ** -11, bf16: 2 ** -8 } as const;
const BAD = [Infinity, -Infinity, NaN] as const;

const native = loadNativeKernels();
const tables: Array<[string, Kernels]> = [['TypeScript', jsKernels]];
if (native.ok) {
  tables.push([`native ${native.kernels.isa}`, native.kernels]);
  if (native.kernels.isa !== 'portable') tables.push(['native portable', native.portable]);
}

/** Values that need fp16's scale (1e4..1e6, beyond its 65504) and some that lose to it (1e-3), deterministic. */
function values(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => {
    const t = Math.sin(i * 0.731 + seed * 1.37);
    return (i % 11 === 5 ? 1e-3 : 1e4 + 1e6 * Math.abs(t)) * (t < 0 ? -1 : 1);
  });
}
const sameBits = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));

describe.each(tables)('one chunk through the codecs: %s kernels', (_name, k) => {
  const codecs = codecsWith(k);
  const N = 300;
  const positions = [0, 1, 150, N - 2, N - 1];

  it.each(['fp16', 'bf16'] as const)('%s: encode, decode; decode-add and its max: the non-finite element changes nothing else', (c) => {
    const codec: Codec = codecs[c];
    for (const at of positions) {
      for (const bad of BAD) {
        const where = `${c} ${bad} at ${at}`;
        const x = values(N, at);
        const ref = x.slice();
        x[at] = bad;
        ref[at] = 0;
        const a = new Uint8Array(2 * N);
        const b = new Uint8Array(2 * N);
        const fa = codec.encode(a, x);
        const fb = codec.encode(b, ref);
        expect(fa, where).toBe(fb);
        const da = new Float32Array(N);
        const db = new Float32Array(N);
        codec.decode(da, a, fa);
        codec.decode(db, b, fb);
        for (let i = 0; i < N; i++) {
          if (i === at) expect(sameBits(da[i], bad), `${where}: the element itself`).toBe(true);
          else {
            expect(da[i], `${where}: element ${i}`).toBe(db[i]);
            expect(Math.abs(da[i] - x[i]), `${where}: element ${i}`).toBeLessThanOrEqual(U[c] * Math.abs(x[i]) + 2 ** -39 * 1e6);
          }
        }
        // A reduce-scatter hop: acc += decoded, and (fp16) the max that sets the next scale.
        const acc = values(N, at + 1);
        const accRef = acc.slice();
        acc[at] = accRef[at] = 1;
        const max = codec.decodeAddMax ? codec.decodeAddMax(acc, a, fa) : (codec.decodeAdd(acc, a, fa), k.maxAbsFinite(acc));
        codec.decodeAdd(accRef, b, fb);
        expect(sameBits(acc[at], bad + 1), `${where}: acc at the element`).toBe(true);
        let want = 0;
        for (let i = 0; i < N; i++) if (i !== at) (expect(acc[i]).toBe(accRef[i]), (want = Math.max(want, Math.abs(accRef[i]))));
        expect(max, `${where}: the max over the finite sums`).toBe(Math.max(want, Math.abs(accRef[at])));
      }
    }
  });
});

// ---- the whole all-reduce, on both backends ---------------------------------------------------

type Api = typeof import('../src/index.js');

/** The library as a fresh module graph: the native kernels, or the TypeScript fallback (RINGREDUCE_NO_NATIVE=1). */
async function library(backend: 'native' | 'js'): Promise<{ api: Api; active: string }> {
  vi.stubEnv('RINGREDUCE_NO_NATIVE', backend === 'js' ? '1' : '');
  vi.resetModules();
  try {
    const api = await import('../src/index.js');
    const kernels = await import('../src/kernels/index.js');
    return { api, active: kernels.kernels.backend };
  } finally {
    vi.unstubAllEnvs();
  }
}

const CHUNK_BYTES = 512; // 256 16-bit elements per frame: past the cut-over, so native kernels run
const COUNT = 2500;

/** Chunk starts, ends and middles of the ring's schedule (segments of COUNT over n ranks, frames of 256). */
function positionsFor(n: number): number[] {
  const elems = CHUNK_BYTES / 2;
  const out = new Set<number>();
  for (let s = 0; s < n; s++) {
    const seg = segmentRange(COUNT, n, s);
    for (const c of [0, 1, Math.ceil(seg.length / elems) - 1]) {
      const r = chunkRange(seg, elems, c);
      if (r) for (const p of [r.offset, r.offset + (r.length >> 1), r.offset + r.length - 1]) out.add(p);
    }
  }
  return [...out].sort((a, b) => a - b);
}

function exactAt(op: 'sum' | 'average' | 'max', xs: Float32Array[], i: number): number {
  if (op === 'max') {
    let m = xs[0][i];
    for (const x of xs.slice(1)) if (x[i] > m || Number.isNaN(x[i])) m = x[i];
    return m;
  }
  const s = xs.reduce((acc, x) => acc + x[i], 0);
  return op === 'average' ? s / xs.length : s;
}

const open: RingGroup[] = [];
afterAll(() => Promise.all(open.map((g) => g.shutdown().catch(() => {}))));

describe.each(['native', 'js'] as const)('ring all-reduce with compression, %s kernels', (backend) => {
  it.runIf(backend === 'js' || native.ok)(
    'Inf, -Inf, NaN on one rank at chunk starts, ends and middles (and +Inf/-Inf, +Inf/+Inf on two): confined to themselves, IEEE values there, N = 2, 3',
    async () => {
      const { api, active } = await library(backend);
      expect(active).toBe(backend);
      let runs = 0;
      for (const n of [2, 3]) {
        const gs = await api.createLocalGroups(n, { chunkBytes: CHUNK_BYTES });
        open.push(...gs);
        const reduce = (ins: Float32Array[], compression: 'fp16' | 'bf16', op: 'sum' | 'average' | 'max') =>
          withDeadline(Promise.all(gs.map((g, r) => g.allreduce(ins[r], { compression, op }))), 20_000, `${backend} N=${n}`);
        for (const c of ['fp16', 'bf16'] as const) {
          for (const op of ['sum', 'average', 'max'] as const) {
            // One bad value on rank (pos % n), and the two-rank combinations at the first positions.
            const cases: Array<{ at: number; bad: Array<[number, number]> }> = [];
            positionsFor(n).forEach((at, j) => cases.push({ at, bad: [[at % n, BAD[j % 3]]] }));
            cases.push({ at: 0, bad: [[0, Infinity], [1, -Infinity]] });
            cases.push({ at: COUNT - 1, bad: [[0, Infinity], [1, Infinity]] });
            for (const { at, bad } of cases) {
              const where = `${backend} N=${n} ${c} ${op} ${bad.map(([r, v]) => `rank ${r}: ${v}`).join(', ')} at ${at}`;
              const ins = gs.map((_, r) => values(COUNT, r + 1));
              for (const x of ins) x[at] = 1; // small: never a chunk's max
              const refIns = ins.map((x) => x.slice());
              for (const x of refIns) x[at] = 0;
              for (const [r, v] of bad) ins[r][at] = v;
              const outs = (await reduce(ins.map((x) => x.slice()), c, op)) as Float32Array[];
              const refs = (await reduce(refIns, c, op)) as Float32Array[];
              runs += 2;
              const want = exactAt(op, ins, at);
              for (const [r, o] of outs.entries()) {
                expect(sameBits(o[at], want), `${where}: rank ${r} has ${o[at]} at the element, IEEE gives ${want}`).toBe(true);
              }
              // Everything else: the bits of the run without it, and within the bound of the float64 result.
              const chunkOf = (i: number) => Math.floor(i / (CHUNK_BYTES / 2));
              for (let i = 0; i < COUNT; i++) {
                if (i === at) continue;
                for (const o of outs) if (!Object.is(o[i], refs[0][i])) expect(o[i], `${where}: element ${i} (${o[i]}) differs from the run without it (${refs[0][i]})`).toBe(refs[0][i]);
                const exact = exactAt(op, ins, i);
                const abs = ins.reduce((s, x) => s + Math.abs(x[i]), 0);
                const div = op === 'average' ? n : 1;
                const bound = (n * U[c] * abs + (c === 'fp16' ? n * 2 ** -39 * 2e6 * n : 0) + n * 2 ** -24 * abs) / div;
                const err = Math.abs(outs[0][i] - exact);
                if (!(err <= bound)) expect(err, `${where}: element ${i}: |${outs[0][i]} - ${exact}| (chunk ${chunkOf(i)})`).toBeLessThanOrEqual(bound);
              }
            }
          }
        }
        await Promise.all(gs.map((g) => g.shutdown()));
      }
      console.log(`${backend} kernels: ${runs} compressed all-reduces`);
      vi.resetModules();
    },
    240_000,
  );
});
