import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as rr from '../../index.js';
import { type BenchConfig, sweep } from './args.js';
import { busbwBar, busbwBarScale, humanBytes } from './format.js';
import { packageVersion } from '../layout.js';
import { OP_INFO, rowSizes, type BenchOp } from './ops.js';
import { prepareRun, type BenchComm } from './runners.js';

/**
 * One rank of `ringrun bench`. Rank 0 prints the table; every rank measures. Each iteration is
 * timed on every rank; per iteration the slowest rank's time counts (a max-allreduce of the
 * times after the size is done), and a row shows the median of those.
 */
export interface BenchRow {
  op: BenchOp;
  bytes: number;
  count: number;
  type: 'float';
  /** The reduction, or 'none' for ops without one. */
  redop: string;
  compression: string;
  timeUs: number;
  algbwGBs: number;
  busbwGBs: number;
  wrong: number | null;
}

/** The settings of a --json file's rows: { meta, rows }. */
export interface BenchMeta {
  version: string;
  date: string;
  op: BenchOp;
  n: number;
  /** Distinct hosts the ranks ran on. */
  hosts: number;
  dtype: 'float32';
  reduce: string;
  compression: string;
  kernels: string;
  chunkBytes: number;
  iters: number;
  warmup: number;
}

const fmt = (v: number, w: number, d = 2) => v.toFixed(d).padStart(w);

/** This host, as a number the ranks can all-gather (a hash of the hostname). */
function hostId(): number {
  let h = 0;
  for (const ch of hostname()) h = (Math.imul(h, 31) + ch.charCodeAt(0)) | 0;
  return h;
}


export async function runBench(c: BenchConfig): Promise<void> {
  await rr.init(c.chunkBytes ? { chunkBytes: c.chunkBytes } : {});
  const n = rr.size();
  const me = rr.rank();
  const info = OP_INFO[c.op];
  // The module's free functions; alltoall, send and recv only once the API has them (see BenchComm).
  const comm = rr as unknown as BenchComm;
  const sizes = rowSizes(c.op, sweep(c), n);
  const rows: BenchRow[] = [];
  const out = (s: string) => me === 0 && process.stdout.write(s + '\n');
  const compressed = c.compression !== 'none';
  const redop = info.reduces ? c.reduce : 'none';
  // A progress line for long sweeps, when ringrun's own stderr is a terminal.
  const progress = c.progress === true && sizes.length > 4;
  const settings = [
    `N=${n}`,
    `kernels=${rr.kernels.backend}`,
    `chunkBytes=${c.chunkBytes ?? 1 << 20}`,
    ...(info.reduces ? [`reduce=${c.reduce}`] : []),
    ...(c.op === 'allreduce' ? [`compression=${c.compression}`] : []),
    `iters=${c.iters}`,
    `warmup=${c.warmup}`,
  ];
  out(`# ringreduce bench: ${info.label}, ${settings.join(', ')}`);
  if (compressed) out(`# bytes and bandwidth count the float32 bytes reduced (the wire carries ${c.compression}: half of them)`);
  out('#');
  const bars = c.bars === true;
  out(`# ${'size'.padStart(10)} ${'count'.padStart(12)} ${'type'.padStart(6)} ${'redop'.padStart(7)} ${'time'.padStart(10)} ${'algbw'.padStart(7)} ${'busbw'.padStart(7)} ${'#wrong'.padStart(7)}${bars ? '  busbw (log scale)' : ''}`);
  out(`# ${''.padStart(10)} ${'(elements)'.padStart(12)} ${''.padStart(6)} ${''.padStart(7)} ${'(us)'.padStart(10)} ${'(GB/s)'.padStart(7)} ${'(GB/s)'.padStart(7)} ${''.padStart(7)}${bars ? `  ${busbwBarScale()}` : ''}`);
  const maxCount = sizes[sizes.length - 1] / 4;
  const input = new Float32Array(maxCount);
  const output = new Float32Array(c.op === 'sendrecv' || c.op === 'alltoall' ? maxCount : 0);
  for (const bytes of sizes) {
    const count = bytes / 4;
    const op = prepareRun(c.op, { comm, config: c, rank: me, size: n, count, input, output });
    const times = new Float64Array(c.iters);
    let wrong = 0;
    for (let it = -c.warmup; it < c.iters; it++) {
      if (c.check) op.fill();
      const t0 = performance.now();
      await op.run();
      const t = performance.now() - t0;
      if (it >= 0) times[it] = t;
      if (c.check && it >= 0) wrong += op.wrong();
    }
    const worst = await rr.allreduce(times, { op: 'max' });
    const sorted = Array.from(worst).sort((a, b) => a - b);
    const timeUs = sorted[Math.floor(sorted.length / 2)] * 1000;
    const algbw = bytes / (timeUs * 1e-6) / 1e9;
    const busbw = algbw * info.busFactor(n);
    const wrongAll = c.check ? (await rr.allreduce(Float64Array.of(wrong), { op: 'sum' }))[0] : null;
    const row: BenchRow = { op: c.op, bytes, count, type: 'float', redop, compression: c.compression, timeUs, algbwGBs: algbw, busbwGBs: busbw, wrong: wrongAll };
    rows.push(row);
    out(`  ${humanBytes(bytes).padStart(10)} ${String(count).padStart(12)} ${'float'.padStart(6)} ${redop.padStart(7)} ${fmt(timeUs, 10, 1)} ${fmt(algbw, 7)} ${fmt(busbw, 7)} ${(wrongAll === null ? 'N/A' : String(wrongAll)).padStart(7)}${bars ? `  ${busbwBar(busbw)}` : ''}`);
    if (me === 0 && progress) process.stderr.write(`ringrun bench: ${rows.length}/${sizes.length} sizes done\r`);
  }
  if (me === 0 && progress) process.stderr.write('\n');
  const rss = await rr.allreduce(Float64Array.of(process.resourceUsage().maxRSS * 1024), { op: 'max' });
  out(`# peak RSS of a rank: ${(rss[0] / 2 ** 20).toFixed(0)} MiB (largest buffer ${humanBytes(c.maxBytes)})`);
  // Only where such sizes ran: a sweep of small sizes has no large-size average to show.
  const large = rows.filter((r) => r.bytes >= 16 << 20);
  if (large.length) out(`# avg busbw over sizes >= 16 MiB: ${(large.reduce((s, r) => s + r.busbwGBs, 0) / large.length).toFixed(3)} GB/s`);
  if (c.json) {
    // What the rows were measured with, next to them (a file read later has no command line).
    const hosts = new Set(Array.from(await rr.allgather(Int32Array.of(hostId())), (h) => h)).size;
    const meta: BenchMeta = {
      version: packageVersion(),
      date: new Date().toISOString(),
      op: c.op,
      n,
      hosts,
      dtype: 'float32',
      reduce: redop,
      compression: c.compression,
      kernels: rr.kernels.backend,
      chunkBytes: c.chunkBytes ?? 1 << 20,
      iters: c.iters,
      warmup: c.warmup,
    };
    if (me === 0) {
      writeFileSync(c.json, JSON.stringify({ meta, rows }, null, 2) + '\n');
      out(`# wrote ${c.json}`);
    }
  }
  await rr.shutdown();
}

// Started by ringrun bench as a rank: the configuration arrives in the environment.
if (process.env.RINGREDUCE_BENCH) {
  runBench(JSON.parse(process.env.RINGREDUCE_BENCH) as BenchConfig).catch((e) => {
    process.stderr.write(`ringrun bench: rank failed: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
