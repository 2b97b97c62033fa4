import { afterAll, describe, expect, it } from 'vitest';
import { createLocalGroups, RingError, type RingGroup } from '../src/index.js';
import { bf16, fp16, fp16Scale, type Codec } from '../src/compression/codec.js';
import * as jsHalf from '../src/kernels/js-half.js';
import { withDeadline } from './helpers/reference.js';

/**
 * Wire compression against a float64 reference. The guarantee (README, "Compression"), per
 * element i of an N-rank sum, with u = 2^-11 for fp16 and 2^-8 for bf16:
 *   |result_i - exact_i| <= N·u·Σ_r |x_r,i|  +  N·2^-39·M        (fp16 only: M = the largest |partial sum| in i's chunk)
 * plus float32 accumulation (N·2^-24·Σ|x|). 'average' divides both sides by N. The encoder scales
 * each chunk by a power of two, so nothing finite becomes Inf, and tiny magnitudes keep precision.
 */
const U = { fp16: 2 ** -11, bf16: 2 ** -8 } as const;
const open: RingGroup[] = [];
afterAll(() => Promise.all(open.map((g) => g.shutdown())));

async function reduce(n: number, ins: Float32Array[], compression: 'fp16' | 'bf16', op: 'sum' | 'average', transport: 'memory' | 'ws' = 'memory') {
  const gs = await createLocalGroups(n, { chunkBytes: 256, transport });
  open.push(...gs);
  return withDeadline(Promise.all(gs.map((g, r) => g.allreduce(ins[r], { compression, op }))), 20_000, 'compressed allreduce');
}

function check(ins: Float32Array[], outs: Float32Array[], c: 'fp16' | 'bf16', op: 'sum' | 'average', chunkElems = 64) {
  const n = ins.length;
  const count = ins[0].length;
  const div = op === 'average' ? n : 1;
  let worst = 0;
  for (let i = 0; i < count; i++) {
    let exact = 0;
    let abs = 0;
    for (const x of ins) {
      exact += x[i];
      abs += Math.abs(x[i]);
    }
    // M: the largest Σ|x| in this element's chunk (bounds every partial sum there).
    const c0 = Math.floor(i / chunkElems) * chunkElems;
    let M = 0;
    for (let j = c0; j < Math.min(count, c0 + chunkElems); j++) M = Math.max(M, ins.reduce((s, x) => s + Math.abs(x[j]), 0));
    const bound = (n * U[c] * abs + (c === 'fp16' ? n * 2 ** -39 * M : 0) + n * 2 ** -24 * abs) / div;
    const err = Math.abs(outs[0][i] - exact / div);
    expect(Number.isFinite(outs[0][i]), `element ${i} must stay finite`).toBe(true);
    expect(err, `element ${i}: |${outs[0][i]} - ${exact / div}| vs bound ${bound}`).toBeLessThanOrEqual(bound);
    worst = Math.max(worst, abs ? err / (abs / div) : 0);
    for (const o of outs) expect(Object.is(o[i], outs[0][i])).toBe(true); // bit-identical on every rank
  }
  return worst;
}

describe.each(['fp16', 'bf16'] as const)('%s compression', (c) => {
  it.each([1e6, 1e-6, 1e30, 7e4, 1e-30])('magnitude %d: within the bound, finite, bit-identical (N = 2, 3, 5)', async (mag) => {
    for (const n of [2, 3, 5]) {
      const ins = Array.from({ length: n }, (_, r) => Float32Array.from({ length: 1001 }, (_, i) => mag * Math.sin(i * 0.37 + r)));
      for (const op of ['sum', 'average'] as const) check(ins, await reduce(n, ins, c, op), c, op);
    }
  });

  it('1e6 and 1e-6 in the same chunks: the absolute floor of the bound applies', async () => {
    const ins = [0, 1, 2].map((r) => Float32Array.from({ length: 500 }, (_, i) => (i % 2 ? 1e6 : 1e-6) * (1 + 0.01 * r + 0.001 * i)));
    check(ins, await reduce(3, ins, c, 'sum'), c, 'sum');
  });

  it('over WebSockets too', async () => {
    const ins = [0, 1].map((r) => Float32Array.from({ length: 4099 }, (_, i) => 1e5 * Math.cos(i + r)));
    check(ins, await reduce(2, ins, c, 'average', 'ws'), c, 'average');
  });

  it('min and max decode then compare; Inf stays Inf', async () => {
    const ins = [0, 1, 2].map((r) => Float32Array.from({ length: 300 }, (_, i) => (i === 7 && r === 1 ? Infinity : (i % 13) - r)));
    const gs = await createLocalGroups(3, { chunkBytes: 64 });
    open.push(...gs);
    const outs = await Promise.all(gs.map((g, r) => g.allreduce(ins[r], { compression: c, op: 'max' })));
    expect(outs[0][7]).toBe(Infinity);
    // Small integers are exact in both formats.
    for (let i = 0; i < 300; i++) if (i !== 7) expect(outs[2][i]).toBe(i % 13);
  });
});

describe('compression arguments', () => {
  it('only float32; ranks must agree', async () => {
    const gs = await createLocalGroups(2, {});
    open.push(...gs);
    expect(() => gs[0].allreduce(new Int32Array(3), { compression: 'fp16' })).toThrow(/compression 'fp16' applies to Float32Array data, got int32/);
    expect(() => gs[0].allreduce(new Float32Array(3), { compression: 'zip' as never })).toThrow(/options.compression must be 'none', 'fp16' or 'bf16'/);
    const settled = await Promise.allSettled([gs[0].allreduce(new Float32Array(3), { compression: 'fp16' }), gs[1].allreduce(new Float32Array(3))]);
    for (const s of settled) {
      expect(s.status).toBe('rejected');
      const e = (s as PromiseRejectedResult).reason as RingError;
      expect(e.code).toBe('RING_ERR_MISMATCH');
      expect(e.message).toContain("ranks disagree on the compression (rank 0: 'fp16'; rank 1: 'none')");
    }
  });

  it('the fp16 chunk scale is a power of two putting the max in [2^14, 2^15)', () => {
    for (const m of [1e-30, 1e-6, 0.5, 1, 3, 16384, 65504, 7e4, 1e6, 3e38]) {
      const s = fp16Scale(m);
      expect(Number.isInteger(Math.log2(s))).toBe(true);
      expect(m * s).toBeGreaterThanOrEqual(2 ** 14);
      expect(m * s).toBeLessThan(2 ** 15);
    }
    expect(fp16Scale(0)).toBe(1);
    expect(fp16Scale(Infinity)).toBe(1);
    expect(fp16Scale(NaN)).toBe(1);
  });

  /**
   * The all-gather half forwards a chunk it has decoded by encoding it again with the frame's own
   * factor (instead of keeping the bytes): that must give back exactly the decoded values, or
   * ranks further round the ring would end with other bits than the chunk's owner.
   */
  const roundTrip = (name: string, decode: (d: Float32Array, s: Uint8Array, f: number) => void, reencode: (d: Uint8Array, v: Float32Array, f: number) => void, factors: number[]) => {
    const all = new Uint8Array(new Uint16Array(65536).map((_, i) => i).buffer);
    const a = new Float32Array(65536);
    const b = new Float32Array(65536);
    const bytes = new Uint8Array(2 * 65536);
    const ab = new Uint32Array(a.buffer);
    const bb = new Uint32Array(b.buffer);
    for (const factor of factors) {
      decode(a, all, factor);
      reencode(bytes, a, factor);
      decode(b, bytes, factor);
      for (let i = 0; i < 65536; i++) {
        if (ab[i] !== bb[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) {
          throw new Error(`${name}: pattern 0x${i.toString(16)} at factor 2^${Math.log2(factor)}: ${a[i]} re-encodes to ${b[i]}`);
        }
      }
    }
  };
  const fp16Factors = Array.from({ length: 253 }, (_, k) => 2 ** (k - 126));

  it('re-encoding a decoded chunk with its factor gives back exactly the decoded values: every 16-bit pattern, every factor', () => {
    const codecs: Array<[string, Codec, number[]]> = [['fp16', fp16, fp16Factors], ['bf16', bf16, [1, 2]]];
    for (const [name, c, factors] of codecs) roundTrip(`${name} (active kernels)`, c.decode, c.reencode, factors);
    // The TypeScript fallback kernels too (CI may run either).
    roundTrip('fp16 (TypeScript kernels)', (d, s, f) => jsHalf.f16ToF32(d, s, f), (d, v, f) => jsHalf.f32ToF16(d, v, 1 / f), fp16Factors);
  });
});
