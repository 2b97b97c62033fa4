#!/usr/bin/env node
// Same sizes, same N, one run: ringreduce (none, fp16) vs Gloo (torch.distributed) vs Open MPI over TCP.
//   node bench/compare.mjs [--np 2,4] [--sizes 4,16M,64M] [--iters 20] [--warmup 5] [--small-iters 1000]
// Gloo needs Debian's python3-torch, MPI needs openmpi-bin + python3-mpi4py; missing ones are skipped.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const here = new URL('.', import.meta.url).pathname;
const root = join(here, '..');
const usage = `Usage: node bench/compare.mjs [--np 2,4] [--sizes 4,16M,64M] [--iters 20] [--warmup 5] [--small-iters 1000]

Runs, at the same sizes and N in one run, ringreduce (compression none and fp16, via ringrun bench),
Gloo through torch.distributed and Open MPI's MPI_Allreduce over TCP, and prints times, busbw
(nccl-tests' definition) and the ratios. Gloo needs Debian's python3-torch; MPI needs openmpi-bin
and python3-mpi4py; a missing one is skipped with a note.
  --np LIST      rank counts, comma separated (default 2,4)
  --sizes LIST   byte sizes with optional K/M/G suffix (default 4,16M,64M)
  --iters K      timed iterations per size (default 20)
  --warmup W     untimed iterations first (default 5)
  --small-iters K  sizes up to 64 KiB are latency-bound and noisy: K timed iterations after
                 K warm-up ones instead, for every library alike (default 1000). As many
                 warm-ups as timed runs: V8 optimizes a collective's code path only after
                 some hundreds of calls (with K/10 of them, ringreduce's 4-byte time at N=2
                 measured ~120 us instead of ~65 us); a training job runs thousands of steps
`;
let args;
try {
  ({ values: args } = parseArgs({ options: { np: { type: 'string' }, sizes: { type: 'string' }, iters: { type: 'string' }, warmup: { type: 'string' }, 'small-iters': { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
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
const groups = [sizes.filter((s) => s <= SMALL), sizes.filter((s) => s > SMALL)].filter((g) => g.length > 0);
const py = '/usr/bin/python3';
const has = (cmd, a) => spawnSync(cmd, a, { stdio: 'ignore' }).status === 0;
const haveTorch = has(py, ['-c', 'import torch.distributed']);
const haveMpi = has('mpirun', ['--version']) && has(py, ['-c', 'import mpi4py, numpy']);

console.log(`# node bench/compare.mjs --np ${nps.join(',')} --sizes ${args.sizes ?? '4,16M,64M'} --iters ${iters} --warmup ${warmup} --small-iters ${smallIters}`);
console.log(`# gloo: ${haveTorch ? 'yes' : 'skipped (apt-get install python3-torch)'}; mpi: ${haveMpi ? 'yes' : 'skipped (apt-get install openmpi-bin python3-mpi4py)'}`);
const dir = mkdtempSync(join(tmpdir(), 'rr-compare-'));
const busbw = (bytes, us, n) => (bytes / (us * 1e-6) / 1e9) * (2 * (n - 1)) / n;

function ringreduce(n, compression) {
  const out = {};
  for (const s of sizes) {
    const json = join(dir, `rr-${n}-${compression}-${s}.json`);
    const p = plan(s);
    execFileSync(process.execPath, [join(root, 'bin', 'ringrun.js'), 'bench', '-np', String(n), '--min-bytes', String(s), '--max-bytes', String(s),
      '--iters', String(p.iters), '--warmup', String(p.warmup), '--compression', compression, '--json', json], { stdio: ['ignore', 'ignore', 'inherit'] });
    out[s] = JSON.parse(readFileSync(json, 'utf8'))[0].timeUs;
  }
  return out;
}
function rows(stdout) {
  return Object.fromEntries(stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).map((r) => [r.bytes, r.timeUs]));
}
const each = (run) => Object.assign({}, ...groups.map((g) => run(plan(g[0]), g)));
const gloo = (n) => each((p, g) => rows(execFileSync(py, [join(here, 'gloo_allreduce.py'), String(n), String(p.iters), String(p.warmup), ...g.map(String)], { encoding: 'utf8' })));
const mpi = (n) => each((p, g) => rows(execFileSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(n), '--mca', 'btl', 'tcp,self', py, join(here, 'mpi_allreduce.py'),
  String(p.iters), String(p.warmup), ...g.map(String)], { encoding: 'utf8', env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' } })));

try {
  console.log('#');
  console.log('#  N        bytes | time us:  rr-none   rr-fp16      gloo   mpi-tcp | busbw GB/s: rr-none rr-fp16  gloo  mpi | rr-none/gloo rr-none/mpi rr-fp16/gloo | time rr/gloo');
  for (const n of nps) {
    const r = { none: ringreduce(n, 'none'), fp16: ringreduce(n, 'fp16'), gloo: haveTorch ? gloo(n) : {}, mpi: haveMpi ? mpi(n) : {} };
    for (const s of sizes) {
      const t = (k) => r[k][s];
      const f = (v, w = 9) => (v === undefined ? '-' : v.toFixed(1)).padStart(w);
      const b = (k) => (t(k) === undefined ? undefined : busbw(s, t(k), n));
      const g = (v) => (v === undefined ? '   -' : v.toFixed(2)).padStart(6);
      const ratio = (a, c) => (a === undefined || c === undefined ? '-' : (a / c).toFixed(2) + 'x').padStart(12);
      console.log(`  ${String(n).padStart(2)} ${String(s).padStart(12)} |        ${f(t('none'))} ${f(t('fp16'))} ${f(t('gloo'))} ${f(t('mpi'))} |           ${g(b('none'))} ${g(b('fp16'))} ${g(b('gloo'))} ${g(b('mpi'))} | ${ratio(b('none'), b('gloo'))} ${ratio(b('none'), b('mpi'))} ${ratio(b('fp16'), b('gloo'))} | ${ratio(t('none'), t('gloo'))}`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
