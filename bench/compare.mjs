#!/usr/bin/env node
// Same sizes, same N, one run: ringreduce (none, fp16) vs Gloo (torch.distributed) vs Open MPI over TCP.
//   node bench/compare.mjs [--op allreduce|alltoall|sendrecv] [--np 2,4] [--sizes 4,16M,64M] [--iters 20] [--warmup 5] [--small-iters 1000]
// Gloo needs Debian's python3-torch, MPI needs openmpi-bin + python3-mpi4py; missing ones are skipped.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { humanBytes } from '../dist/launcher/bench/format.js';
import { OP_INFO, rowSizes } from '../dist/launcher/bench/ops.js';

const here = new URL('.', import.meta.url).pathname;
const root = join(here, '..');
const usage = `Usage: node bench/compare.mjs [--op allreduce|alltoall|sendrecv] [--np 2,4] [--sizes 4,16M,64M] [--iters 20] [--warmup 5] [--small-iters 1000] [--plot FILE] [--json FILE]

Runs, at the same sizes and N in one run, ringreduce (via ringrun bench, built in dist/) and
baselines, and prints times, busbw (nccl-tests' definition, as ringrun bench) and the ratios:
  --op allreduce  (default) ringreduce with compression none and fp16, Gloo's all_reduce through
                 torch.distributed, Open MPI's MPI_Allreduce over TCP (--mca btl tcp,self)
  --op alltoall   ringreduce, Gloo's all_to_all_single (skipped with a note where this torch's
                 Gloo lacks it), MPI_Alltoall over TCP; each size rounds down to a multiple of 4N
  --op sendrecv   ringreduce (rank r sends to r+1 and receives from r-1 at once) with its defaults
                 and with RINGREDUCE_SHM=0 (sockets only), against two floors measured in the same
                 run by bench/sendrecv-baselines.mjs: a TypedArray.set memcpy in one process and a
                 plain net socket on 127.0.0.1 between two processes, both directions at once
                 (both always N=2); busbw = size / time for all four
Gloo needs Debian's python3-torch; MPI needs openmpi-bin and python3-mpi4py; a missing one is
skipped with a note, and so is a ringreduce op that this build does not have.
  --op OP        allreduce, alltoall or sendrecv (default allreduce)
  --np LIST      rank counts, comma separated (default 2,4)
  --sizes LIST   byte sizes with optional K/M/G suffix (default 4,16M,64M)
  --iters K      timed iterations per size (default 20)
  --warmup W     untimed iterations first (default 5)
  --plot FILE    also draw busbw against size (log axes, one line per series, one panel per N)
                 as an SVG, with Vega-Lite (bench/plot.mjs; a dev dependency)
  --json FILE    also write the rows as JSON: [{ series, n, bytes, timeUs, busbwGBs }]
  --small-iters K  sizes up to 64 KiB are latency-bound and noisy: K timed iterations after
                 K warm-up ones instead, for every library alike (default 1000). As many
                 warm-ups as timed runs: V8 optimizes a collective's code path only after
                 some hundreds of calls (with K/10 of them, ringreduce's 4-byte time at N=2
                 measured ~120 us instead of ~65 us); a training job runs thousands of steps
`;
let args;
try {
  ({ values: args } = parseArgs({ options: { op: { type: 'string' }, np: { type: 'string' }, sizes: { type: 'string' }, iters: { type: 'string' }, warmup: { type: 'string' }, 'small-iters': { type: 'string' }, plot: { type: 'string' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
} catch (e) {
  console.error(`compare: ${e.message}\n\n${usage}`);
  process.exit(2);
}
if (args.help) {
  process.stdout.write(usage);
  process.exit(0);
}
const bad = (what) => { console.error(`compare: ${what}`); process.exit(2); };
const positive = (name, v) => (/^[0-9]+$/.test(v) && Number(v) > 0 ? Number(v) : bad(`--${name} must be a positive integer, got '${v}'`));
const op = args.op ?? 'allreduce';
if (!['allreduce', 'alltoall', 'sendrecv'].includes(op)) bad(`--op must be allreduce, alltoall or sendrecv, got '${op}'`);
const nps = (args.np ?? '2,4').split(',').map((v) => (positive('np', v) >= 2 ? Number(v) : bad('--np values must be at least 2')));
const parseSize = (s) => {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m || (Number(m[1]) * { '': 1, K: 1024, M: 1 << 20, G: 1 << 30 }[m[2].toUpperCase()]) % 4) bad(`--sizes: '${s}' is not a byte count that is a multiple of 4 (e.g. 4, 64K, 16M)`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1 << 20, G: 1 << 30 }[m[2].toUpperCase()];
};
const sizes = (args.sizes ?? '4,16M,64M').split(',').map(parseSize);
const iters = positive('iters', args.iters ?? '20');
const warmup = args.warmup === '0' ? 0 : positive('warmup', args.warmup ?? '5');
const smallIters = positive('small-iters', args['small-iters'] ?? '1000');
const SMALL = 64 * 1024;
/** Iterations and warm-up for one size (the same for every library). */
const plan = (s) => (s <= SMALL ? { iters: smallIters, warmup: Math.max(warmup, smallIters) } : { iters, warmup });
const py = '/usr/bin/python3';
const has = (cmd, a) => spawnSync(cmd, a, { stdio: 'ignore' }).status === 0;
const haveTorch = has(py, ['-c', 'import torch.distributed']);
const haveMpi = has('mpirun', ['--version']) && has(py, ['-c', 'import mpi4py, numpy']);

console.log(`# node bench/compare.mjs --op ${op} --np ${nps.join(',')} --sizes ${args.sizes ?? '4,16M,64M'} --iters ${iters} --warmup ${warmup} --small-iters ${smallIters}`);
if (op === 'sendrecv') console.log('# baselines: memcpy and net, both 2 processes whatever N (bench/sendrecv-baselines.mjs)');
else console.log(`# gloo: ${haveTorch ? 'yes' : 'skipped (apt-get install python3-torch)'}; mpi: ${haveMpi ? 'yes' : 'skipped (apt-get install openmpi-bin python3-mpi4py)'}`);
const dir = mkdtempSync(join(tmpdir(), 'rr-compare-'));
const busbw = (bytes, us, n) => (bytes / (us * 1e-6) / 1e9) * OP_INFO[op].busFactor(n);
/** The sizes at N ranks: ops that split a size into N parts round it to a multiple of 4N, as ringrun bench does. */
const sizesAt = (n) => rowSizes(op, sizes, n);
const groupsOf = (list) => [list.filter((s) => s <= SMALL), list.filter((s) => s > SMALL)].filter((g) => g.length > 0);

/** Runs a measurement; on failure prints a note (e.g. an op this build or this torch lacks) and returns no rows. */
function orSkip(what, run) {
  try {
    return run();
  } catch (e) {
    const why = String(e.stderr ?? e.message).trim().split('\n').filter(Boolean).pop() ?? '';
    console.log(`# ${what}: skipped (${why})`);
    return {};
  }
}

function ringreduce(n, { compression, env = {} } = {}) {
  const out = {};
  for (const s of sizesAt(n)) {
    const json = join(dir, `rr-${n}-${compression ?? 'plain'}-${Object.keys(env).length ? 'env' : 'default'}-${s}.json`);
    const p = plan(s);
    execFileSync(process.execPath, [join(root, 'bin', 'ringrun.js'), 'bench', '-np', String(n), '--op', op, '--min-bytes', String(s), '--max-bytes', String(s),
      '--iters', String(p.iters), '--warmup', String(p.warmup), ...(compression ? ['--compression', compression] : []), '--json', json],
      { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', env: { ...process.env, ...env } });
    out[s] = JSON.parse(readFileSync(json, 'utf8')).rows[0].timeUs;
  }
  return out;
}
function rows(stdout, baseline) {
  return Object.fromEntries(stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((r) => r.baseline === baseline).map((r) => [r.bytes, r.timeUs]));
}
const each = (list, run) => Object.assign({}, ...groupsOf(list).map((g) => run(plan(g[0]), g)));
const gloo = (n) => each(sizesAt(n), (p, g) => rows(execFileSync(py, [join(here, `gloo_${op}.py`), String(n), String(p.iters), String(p.warmup), ...g.map(String)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })));
const mpi = (n) => each(sizesAt(n), (p, g) => rows(execFileSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(n), '--mca', 'btl', 'tcp,self', py, join(here, `mpi_${op}.py`),
  String(p.iters), String(p.warmup), ...g.map(String)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' } })));
let floorRows;
/** Both sendrecv floors from one run of the script per size group: { memcpy: {bytes: us}, net: {...} }. */
function floors() {
  const out = { memcpy: {}, net: {} };
  for (const [p, g] of groupsOf(sizes).map((g) => [plan(g[0]), g])) {
    const stdout = execFileSync(process.execPath, [join(here, 'sendrecv-baselines.mjs'), String(p.iters), String(p.warmup), ...g.map(String)], { encoding: 'utf8' });
    Object.assign(out.memcpy, rows(stdout, 'memcpy'));
    Object.assign(out.net, rows(stdout, 'net'));
  }
  return out;
}

/**
 * Per op: the series measured at N ranks (name -> () => {bytes: timeUs}) and the ratios printed
 * ([a, b, 'busbw' | 'time']: a's busbw over b's, or a's time over b's).
 */
const COMPARISONS = {
  allreduce: {
    series: (n) => ({
      'rr-none': () => ringreduce(n, { compression: 'none' }),
      'rr-fp16': () => ringreduce(n, { compression: 'fp16' }),
      gloo: () => (haveTorch ? gloo(n) : {}),
      'mpi-tcp': () => (haveMpi ? mpi(n) : {}),
    }),
    ratios: [['rr-none', 'gloo', 'busbw'], ['rr-none', 'mpi-tcp', 'busbw'], ['rr-fp16', 'gloo', 'busbw'], ['rr-none', 'gloo', 'time']],
  },
  alltoall: {
    series: (n) => ({ rr: () => ringreduce(n), gloo: () => (haveTorch ? gloo(n) : {}), 'mpi-tcp': () => (haveMpi ? mpi(n) : {}) }),
    ratios: [['rr', 'gloo', 'busbw'], ['rr', 'mpi-tcp', 'busbw'], ['rr', 'gloo', 'time']],
  },
  sendrecv: {
    series: (n) => {
      const f = (floorRows ??= floors());
      return { rr: () => ringreduce(n), 'rr-sock': () => ringreduce(n, { env: { RINGREDUCE_SHM: '0' } }), memcpy: () => f.memcpy, net: () => f.net };
    },
    ratios: [['rr', 'memcpy', 'busbw'], ['rr', 'net', 'busbw'], ['rr-sock', 'net', 'busbw']],
  },
};

/** Every measured point, for --json and --plot. */
const collected = [];
try {
  const { series, ratios } = COMPARISONS[op];
  const names = Object.keys(series(nps[0]));
  const labels = ratios.map(([a, b, by]) => (by === 'time' ? `time ${a}/${b}` : `${a}/${b}`));
  const widths = labels.map((l) => Math.max(12, l.length));
  console.log('#');
  console.log(`#  N         size | time us: ${names.map((k) => k.padStart(9)).join(' ')} | busbw GB/s: ${names.map((k) => k.padStart(7)).join(' ')} | ${labels.map((l, i) => l.padStart(widths[i])).join(' ')}`);
  for (const n of nps) {
    const r = Object.fromEntries(Object.entries(series(n)).map(([k, run]) => [k, orSkip(`${k} at N=${n}`, run)]));
    for (const s of sizesAt(n)) {
      const t = (k) => r[k][s];
      for (const k of names) if (t(k) !== undefined) collected.push({ series: k, n, bytes: s, timeUs: t(k), busbwGBs: busbw(s, t(k), n) });
      const f = (v, w = 9) => (v === undefined ? '-' : v.toFixed(1)).padStart(w);
      const b = (k) => (t(k) === undefined ? undefined : busbw(s, t(k), n));
      const g = (v) => (v === undefined ? '-' : v.toFixed(2)).padStart(7);
      const ratio = ([a, c, by], i) => {
        const [x, y] = by === 'time' ? [t(a), t(c)] : [b(a), b(c)];
        return (x === undefined || y === undefined ? '-' : (x / y).toFixed(2) + 'x').padStart(widths[i]);
      };
      console.log(`  ${String(n).padStart(2)} ${humanBytes(s).padStart(12)} |          ${names.map((k) => f(t(k))).join(' ')} |             ${names.map((k) => g(b(k))).join(' ')} | ${ratios.map(ratio).join(' ')}`);
    }
  }
  if (args.json) {
    writeFileSync(args.json, JSON.stringify(collected, null, 1));
    console.log(`# wrote ${args.json}`);
  }
  if (args.plot) {
    const { busbwSvg } = await import('./plot.mjs');
    writeFileSync(args.plot, await busbwSvg(collected, { title: `ringreduce against Gloo and Open MPI`, op }));
    console.log(`# wrote ${args.plot}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
