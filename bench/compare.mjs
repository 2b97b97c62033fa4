#!/usr/bin/env node
// Same sizes, same N, one run: ringreduce (none, fp16) vs Gloo (torch.distributed) vs Open MPI over TCP.
//   node bench/compare.mjs [--np 2,4] [--sizes 4,16M,64M] [--iters 20] [--warmup 5]
// Gloo needs Debian's python3-torch, MPI needs openmpi-bin + python3-mpi4py; missing ones are skipped.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
const root = join(here, '..');
const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const nps = (args.np ?? '2,4').split(',').map(Number);
const parseSize = (s) => { const m = /^(\d+)([KMG]?)$/i.exec(s); return Number(m[1]) * { '': 1, K: 1024, M: 1 << 20, G: 1 << 30 }[m[2].toUpperCase()]; };
const sizes = (args.sizes ?? '4,16M,64M').split(',').map(parseSize);
const iters = Number(args.iters ?? 20);
const warmup = Number(args.warmup ?? 5);
const py = '/usr/bin/python3';
const has = (cmd, a) => spawnSync(cmd, a, { stdio: 'ignore' }).status === 0;
const haveTorch = has(py, ['-c', 'import torch.distributed']);
const haveMpi = has('mpirun', ['--version']) && has(py, ['-c', 'import mpi4py, numpy']);

console.log(`# node bench/compare.mjs --np ${nps.join(',')} --sizes ${args.sizes ?? '4,16M,64M'} --iters ${iters} --warmup ${warmup}`);
console.log(`# gloo: ${haveTorch ? 'yes' : 'skipped (apt-get install python3-torch)'}; mpi: ${haveMpi ? 'yes' : 'skipped (apt-get install openmpi-bin python3-mpi4py)'}`);
const dir = mkdtempSync(join(tmpdir(), 'rr-compare-'));
const busbw = (bytes, us, n) => (bytes / (us * 1e-6) / 1e9) * (2 * (n - 1)) / n;

function ringreduce(n, compression) {
  const out = {};
  for (const s of sizes) {
    const json = join(dir, `rr-${n}-${compression}-${s}.json`);
    execFileSync(process.execPath, [join(root, 'bin', 'ringrun.js'), 'bench', '-np', String(n), '--min-bytes', String(s), '--max-bytes', String(s),
      '--iters', String(iters), '--warmup', String(warmup), '--compression', compression, '--json', json], { stdio: ['ignore', 'ignore', 'inherit'] });
    out[s] = JSON.parse(readFileSync(json, 'utf8'))[0].timeUs;
  }
  return out;
}
function rows(stdout) {
  return Object.fromEntries(stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).map((r) => [r.bytes, r.timeUs]));
}
const gloo = (n) => rows(execFileSync(py, [join(here, 'gloo_allreduce.py'), String(n), String(iters), String(warmup), ...sizes.map(String)], { encoding: 'utf8' }));
const mpi = (n) => rows(execFileSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(n), '--mca', 'btl', 'tcp,self', py, join(here, 'mpi_allreduce.py'),
  String(iters), String(warmup), ...sizes.map(String)], { encoding: 'utf8', env: { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none' } }));

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
