import { writeFileSync } from 'node:fs';
import * as rr from '../../index.js';
import { type BenchConfig, sweep } from './args.js';

/**
 * One rank of `ringrun bench`. Rank 0 prints the table; every rank measures. Each iteration is
 * timed on every rank; per iteration the slowest rank's time counts (a max-allreduce of the
 * times after the size is done), and a row shows the median of those.
 */
export interface BenchRow {
  bytes: number;
  count: number;
  type: 'float';
  redop: string;
  compression: string;
  timeUs: number;
  algbwGBs: number;
  busbwGBs: number;
  wrong: number | null;
}

const fmt = (v: number, w: number, d = 2) => v.toFixed(d).padStart(w);

export async function runBench(c: BenchConfig): Promise<void> {
  await rr.init(c.chunkBytes ? { chunkBytes: c.chunkBytes } : {});
  const n = rr.size();
  const me = rr.rank();
  const sizes = sweep(c);
  const rows: BenchRow[] = [];
  const out = (s: string) => me === 0 && process.stdout.write(s + '\n');
  const compressed = c.compression !== 'none';
  // A progress line for long sweeps, when ringrun's own stderr is a terminal.
  const progress = c.progress === true && sizes.length > 4;
  out(`# ringreduce bench: all-reduce, N=${n}, kernels=${rr.kernels.backend}, chunkBytes=${c.chunkBytes ?? 1 << 20}, op=${c.op}, compression=${c.compression}, iters=${c.iters}, warmup=${c.warmup}`);
  if (compressed) out(`# bytes and bandwidth count the float32 bytes reduced (the wire carries ${c.compression}: half of them)`);
  out('#');
  out(`# ${'size'.padStart(12)} ${'count'.padStart(12)} ${'type'.padStart(6)} ${'redop'.padStart(7)} ${'time'.padStart(10)} ${'algbw'.padStart(7)} ${'busbw'.padStart(7)} ${'#wrong'.padStart(7)}`);
  out(`# ${'(B)'.padStart(12)} ${'(elements)'.padStart(12)} ${''.padStart(6)} ${''.padStart(7)} ${'(us)'.padStart(10)} ${'(GB/s)'.padStart(7)} ${'(GB/s)'.padStart(7)} ${''.padStart(7)}`);
  const x = new Float32Array(c.maxBytes / 4);
  for (const bytes of sizes) {
    const count = bytes / 4;
    const view = x.subarray(0, count);
    const times = new Float64Array(c.iters);
    let wrong = 0;
    const fill = () => {
      // Small integers: exact in float32, fp16 and bf16, and so are their sums and products.
      for (let i = 0; i < count; i++) view[i] = c.op === 'product' ? ((i + me) % 2) + 1 : ((i * 3 + me) % 8);
    };
    for (let it = -c.warmup; it < c.iters; it++) {
      if (c.check) fill();
      const t0 = performance.now();
      await rr.allreduce(view, { op: c.op, inPlace: true, ...(compressed ? { compression: c.compression } : {}) } as rr.AllreduceOptions);
      const t = performance.now() - t0;
      if (it >= 0) times[it] = t;
      if (c.check && it >= 0) wrong += countWrong(view, c.op, n);
    }
    const worst = await rr.allreduce(times, { op: 'max' });
    const sorted = Array.from(worst).sort((a, b) => a - b);
    const timeUs = sorted[Math.floor(sorted.length / 2)] * 1000;
    const algbw = bytes / (timeUs * 1e-6) / 1e9;
    const busbw = (algbw * 2 * (n - 1)) / n;
    const wrongAll = c.check ? (await rr.allreduce(Float64Array.of(wrong), { op: 'sum' }))[0] : null;
    const row: BenchRow = { bytes, count, type: 'float', redop: c.op, compression: c.compression, timeUs, algbwGBs: algbw, busbwGBs: busbw, wrong: wrongAll };
    rows.push(row);
    out(`  ${String(bytes).padStart(12)} ${String(count).padStart(12)} ${'float'.padStart(6)} ${c.op.padStart(7)} ${fmt(timeUs, 10, 1)} ${fmt(algbw, 7)} ${fmt(busbw, 7)} ${(wrongAll === null ? 'N/A' : String(wrongAll)).padStart(7)}`);
    if (me === 0 && progress) process.stderr.write(`ringrun bench: ${rows.length}/${sizes.length} sizes done\r`);
  }
  if (me === 0 && progress) process.stderr.write('\n');
  const rss = await rr.allreduce(Float64Array.of(process.resourceUsage().maxRSS * 1024), { op: 'max' });
  out(`# peak RSS of a rank: ${(rss[0] / 2 ** 20).toFixed(0)} MiB (largest buffer ${(c.maxBytes / 2 ** 20).toFixed(1)} MiB)`);
  const large = rows.filter((r) => r.bytes >= Math.min(c.maxBytes, 16 << 20));
  if (large.length) out(`# avg busbw over sizes >= 16 MiB: ${(large.reduce((s, r) => s + r.busbwGBs, 0) / large.length).toFixed(3)} GB/s`);
  if (me === 0 && c.json) writeFileSync(c.json, JSON.stringify(rows, null, 2) + '\n');
  await rr.shutdown();
}

function countWrong(v: Float32Array, op: BenchConfig['op'], n: number): number {
  // Rank r's value at i depends on i mod 8 only (see fill), so the exact result has period 8.
  const expect = Array.from({ length: 8 }, (_, i) => {
    if (op === 'product') {
      let e = 1;
      for (let r = 0; r < n; r++) e *= ((i + r) % 2) + 1;
      return e;
    }
    const vals = Array.from({ length: n }, (_, r) => (i * 3 + r) % 8);
    const sum = vals.reduce((a, b) => a + b, 0);
    return op === 'sum' ? sum : op === 'average' ? Math.fround(sum / n) : op === 'min' ? Math.min(...vals) : Math.max(...vals);
  });
  let wrong = 0;
  for (let i = 0; i < v.length; i++) if (v[i] !== expect[i & 7]) wrong++;
  return wrong;
}

// Started by ringrun bench as a rank: the configuration arrives in the environment.
if (process.env.RINGREDUCE_BENCH) {
  runBench(JSON.parse(process.env.RINGREDUCE_BENCH) as BenchConfig).catch((e) => {
    process.stderr.write(`ringrun bench: rank failed: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
