#!/usr/bin/env node
// Parameter servers against the ring, measured in the same run.
//
// 1. Throughput: for S servers x W workers x a model of M MiB, the gradient bytes a worker pushes
//    and gets back as weights per second (push + pull through DistributedOptimizer({
//    parameterServer: { mode: 'sync' } }), SGD applied on the servers), next to an all-reduce of
//    the same bytes over the same workers' ring (rr.allreduce) in the same job.
// 2. A straggler: examples/s of examples/parameter-server/train.js with one of 3 workers slowed
//    3x, in the ring and in the three modes.
//
//   node bench/ps.mjs [--servers 1,2,4] [--workers 2,3,4] [--mib 1,16,64] [--straggler-epochs 1]
//   node bench/ps.mjs --help
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const ringrun = join(root, 'bin', 'ringrun.js');
const USAGE = `Usage: node bench/ps.mjs [options]

Push+pull throughput through parameter servers next to a ring all-reduce of the same bytes (same
job, same workers), and examples/s of a straggler scenario (3 workers, one slowed 3x) in the ring
and the three parameter-server modes. Jobs start through ringrun.

Options:
  --servers LIST         numbers of servers (default 1,2,4)
  --workers LIST         numbers of workers (default 2,3,4)
  --mib LIST             model sizes in MiB (default 1,16,64)
  --reps N               timed steps per row (default 20 at 1 MiB, 5 up to 16 MiB, 3 beyond)
  --compression C        none (default), fp16 or bf16: the pushes' wire format
  --straggler-epochs N   passes over the 8,000 digits for the straggler rows (default 1; 0 skips them)
  --no-throughput        only the straggler rows
  --json FILE            also write the rows as JSON
  -h, --help             this text`;

const { values: a } = parseArgs({
  options: {
    servers: { type: 'string', default: '1,2,4' },
    workers: { type: 'string', default: '2,3,4' },
    mib: { type: 'string', default: '1,16,64' },
    reps: { type: 'string' },
    compression: { type: 'string', default: 'none' },
    'straggler-epochs': { type: 'string', default: '1' },
    'no-throughput': { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
    worker: { type: 'boolean', default: false }, // internal: this process is a worker of a throughput job
  },
});
if (a.help) {
  console.log(USAGE);
  process.exit(0);
}
const list = (s) => s.split(',').filter(Boolean).map(Number);

if (a.worker) {
  // One throughput job: a model of MIB MiB in 4 tensors; REPS timed steps after 2 untimed ones.
  const tf = await import('@tensorflow/tfjs');
  const rr = await import('../dist/index.js');
  await tf.setBackend('cpu');
  await rr.init();
  const mib = Number(process.env.BENCH_MIB);
  const reps = Number(process.env.BENCH_REPS);
  const n = (mib * 1024 * 1024) / 4;
  const parts = [0.5, 0.25, 0.125, 0.125].map((f) => Math.round(n * f));
  parts[3] = n - parts[0] - parts[1] - parts[2];
  const vars = parts.map((p, i) => tf.variable(tf.zeros([p]), true, `bench/w${i}`));
  const grads = Object.fromEntries(vars.map((v) => [v.name, tf.fill([v.size], 1e-3)]));
  const opt = new rr.DistributedOptimizer(tf.train.sgd(0.1), { parameterServer: { mode: 'sync' }, compression: process.env.BENCH_COMPRESSION });
  const time = async (fn) => {
    for (let i = 0; i < 2; i++) await fn();
    await rr.barrier();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) await fn();
    return (performance.now() - t0) / reps;
  };
  const psMs = await time(() => opt.applyGradientsAsync(grads));
  const x = new Float32Array(n).fill(1e-3);
  const ringMs = await time(() => rr.allreduce(x, { inPlace: true, compression: process.env.BENCH_COMPRESSION }));
  const all = await rr.allreduce(Float64Array.of(psMs, ringMs), { op: 'max' });
  if (rr.rank() === 0) console.log(`BENCH ${JSON.stringify({ psMs: all[0], ringMs: all[1] })}`);
  await rr.shutdown();
  process.exit(0);
}

const rows = [];
const gbps = (bytes, ms) => bytes / (ms / 1000) / 1e9;
if (!a['no-throughput']) {
  console.log(`## push+pull through parameter servers vs a ring all-reduce of the same bytes (compression ${a.compression})\n`);
  console.log('| servers | workers | model MiB | push+pull ms/step | GB/s per worker | ring all-reduce ms | ring GB/s | server / ring time |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const mib of list(a.mib)) {
    for (const w of list(a.workers)) {
      for (const s of list(a.servers)) {
        const reps = a.reps ?? String(mib <= 1 ? 20 : mib <= 16 ? 5 : 3);
        const env = { ...process.env, BENCH_MIB: String(mib), BENCH_REPS: reps, BENCH_COMPRESSION: a.compression, RINGREDUCE_CHUNK_BYTES: String(1 << 20) };
        const r = spawnSync(process.execPath, [ringrun, '-np', String(w), '--servers', String(s), '--timeout', '600', process.execPath, fileURLToPath(import.meta.url), '--worker'], {
          env,
          encoding: 'utf8',
          maxBuffer: 1 << 26,
        });
        const line = r.stdout.split('\n').find((l) => l.includes('BENCH '));
        if (r.status !== 0 || !line) {
          console.log(`| ${s} | ${w} | ${mib} | failed (exit ${r.status}) | | | | |`);
          process.stderr.write(r.stderr.split('\n').slice(-10).join('\n'));
          continue;
        }
        const { psMs, ringMs } = JSON.parse(line.slice(line.indexOf('BENCH ') + 6));
        const bytes = mib * 1024 * 1024;
        const row = { servers: s, workers: w, mib, psMs, ringMs, psGBps: gbps(bytes, psMs), ringGBps: gbps(bytes, ringMs) };
        rows.push(row);
        console.log(`| ${s} | ${w} | ${mib} | ${psMs.toFixed(1)} | ${row.psGBps.toFixed(3)} | ${ringMs.toFixed(1)} | ${row.ringGBps.toFixed(3)} | ${(psMs / ringMs).toFixed(2)} |`);
      }
    }
  }
}

const epochs = Number(a['straggler-epochs']);
const straggler = [];
if (epochs > 0) {
  console.log(`\n## straggler: 3 workers, rank 2 slowed 3x, MNIST CNN, ${epochs} epoch(s) of 8,000 digits in all\n`);
  console.log('| mode | servers | wall s | examples/s | test accuracy | max staleness | vs ring wall |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  const script = join(root, 'examples', 'parameter-server', 'train.js');
  let ringWall;
  for (const mode of ['ring', 'sync', 'async', 'stale']) {
    const args = [ringrun, '-np', '3', ...(mode === 'ring' ? [] : ['--servers', '1']), 'node', script, '--mode', mode, '--slow-worker', '2', '--epochs', String(epochs), '--min-accuracy', '0'];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
    const line = r.stdout.split('\n').find((l) => l.includes('RESULT '));
    if (!line) {
      console.log(`| ${mode} | failed (exit ${r.status}) | | | | | |`);
      process.stderr.write(r.stderr.split('\n').slice(-10).join('\n'));
      continue;
    }
    const res = JSON.parse(line.slice(line.indexOf('RESULT ') + 7));
    if (mode === 'ring') ringWall = res.wallSec;
    straggler.push(res);
    console.log(
      `| ${mode} | ${mode === 'ring' ? '-' : 1} | ${res.wallSec.toFixed(1)} | ${res.examplesPerSec} | ${res.accuracy.toFixed(4)} | ${mode === 'ring' ? '-' : res.maxStaleness} | ${ringWall ? (res.wallSec / ringWall).toFixed(2) : '-'} |`,
    );
  }
}
if (a.json) writeFileSync(a.json, JSON.stringify({ compression: a.compression, throughput: rows, straggler }, null, 2));
