#!/usr/bin/env node
// Same sizes, same N, one run: ringreduce (none, fp16) vs Gloo (torch.distributed) vs Open MPI over TCP.
//   node bench/compare.mjs [--op allreduce|alltoall|sendrecv] [--np 2,4] [--sizes 4,16M,64M] [--iters 20] [--warmup 5] [--small-iters 1000] [--ceiling]
//   node bench/compare.mjs --hosts ADDR1,ADDR2 [--per-host K] [--rsh CMD] [--iface NAME] [--rr-env VAR=VALUE] ...
// Gloo needs Debian's python3-torch, MPI needs openmpi-bin + python3-mpi4py; missing ones are skipped.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { humanBytes } from '../dist/launcher/bench/format.js';
import { OP_INFO, rowSizes } from '../dist/launcher/bench/ops.js';

const here = new URL('.', import.meta.url).pathname;
const root = join(here, '..');
const usage = `Usage: node bench/compare.mjs [--op allreduce|alltoall|sendrecv] [--np 2,4] [--sizes 4,16M,64M] [--iters 20] [--warmup 5] [--small-iters 1000] [--ceiling] [--plot FILE] [--json FILE]
       node bench/compare.mjs --hosts ADDR1,ADDR2,... [--per-host K] [--rsh CMD] [--iface NAME] [--rr-env VAR=VALUE] [other options as above, without --np]

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
  --rr-env VAR=VALUE  set VAR in ringreduce's ranks (not the baselines'), e.g. RINGREDUCE_SHM=0;
                 may be repeated; printed in the header
  --ceiling      (allreduce) also run tcp-ring, bench/tcp_ring.py: a ring all-reduce in Python
                 over plain TCP sockets (a sender and a receiver thread per rank, numpy adding,
                 1 MiB chunks pipelined across the steps): what kernel TCP allows on these hosts,
                 measured in the same run, with the ratios rr-none/tcp-ring and gloo/tcp-ring.
                 Needs /usr/bin/python3 with numpy (python3-numpy); across hosts its ranks start
                 as Gloo's do (below)

Across hosts (allreduce and alltoall; N = hosts x --per-host, instead of --np): every library
runs its ranks on the hosts given, through the same rsh command, and this script runs on the
first host (rank 0 of every library is there). node, python3 and this checkout must be at the same
paths on every host. bench/netns.mjs builds emulated hosts on one machine and calls this.
  --hosts LIST   host addresses, comma separated; ranks fill them in order
  --per-host K   ranks per host (default 1)
  --rsh CMD      how to run a command on another host (default "ssh -T -o BatchMode=yes"),
                 called as CMD HOST 'shell command': ringrun --rsh CMD, Open MPI's
                 --mca plm_rsh_agent CMD, and one CMD per Gloo rank (torch.distributed with
                 RANK, WORLD_SIZE, MASTER_ADDR = the first host, MASTER_PORT; the same for
                 tcp-ring's ranks with --ceiling)
  --iface NAME   the interface joining the hosts: ringrun --iface, GLOO_SOCKET_IFNAME (and
                 TCP_RING_IFNAME for tcp-ring), and Open MPI's btl_tcp_if_include and
                 oob_tcp_if_include
  Ranks are not bound to cores across hosts (ringrun and mpirun --bind-to none, as Gloo): emulated
  hosts share one machine's cores, and a binding per host would put every host's rank 0 on CPU 0.
`;
let args;
try {
  ({ values: args } = parseArgs({ options: { hosts: { type: 'string' }, 'per-host': { type: 'string' }, rsh: { type: 'string' }, iface: { type: 'string' }, 'rr-env': { type: 'string', multiple: true }, op: { type: 'string' }, np: { type: 'string' }, sizes: { type: 'string' }, iters: { type: 'string' }, warmup: { type: 'string' }, 'small-iters': { type: 'string' }, ceiling: { type: 'boolean' }, plot: { type: 'string' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
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
if (args.ceiling && op !== 'allreduce') bad(`--ceiling goes with --op allreduce (bench/tcp_ring.py is an all-reduce), not ${op}`);
const hosts = args.hosts?.split(',').filter(Boolean);
if (hosts) {
  if (args.np) bad('--np goes without --hosts: across hosts N is the number of hosts times --per-host');
  if (op === 'sendrecv') bad("--hosts: --op sendrecv's floors run on this host only; use allreduce or alltoall");
} else if (args['per-host'] || args.rsh || args.iface) bad('--per-host, --rsh and --iface go with --hosts');
const perHost = positive('per-host', args['per-host'] ?? '1');
const nps = hosts ? [hosts.length * perHost] : (args.np ?? '2,4').split(',').map((v) => positive('np', v));
if (nps.some((n) => n < 2)) bad('N must be at least 2 (--np, or the hosts times --per-host)');
const rsh = args.rsh ?? 'ssh -T -o BatchMode=yes';
const iface = args.iface;
const rrEnv = Object.fromEntries(
  (args['rr-env'] ?? []).map((kv) => (/^[A-Za-z_][A-Za-z0-9_]*=/.test(kv) ? [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] : bad(`--rr-env: '${kv}' is not VAR=VALUE`))),
);
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
const haveNumpy = args.ceiling && has(py, ['-c', 'import numpy']);

const where = hosts ? `--hosts ${hosts.join(',')} --per-host ${perHost}` : `--np ${nps.join(',')}`;
console.log(`# node bench/compare.mjs --op ${op} ${where} --sizes ${args.sizes ?? '4,16M,64M'} --iters ${iters} --warmup ${warmup} --small-iters ${smallIters}${args.ceiling ? ' --ceiling' : ''}`);
if (op === 'sendrecv') console.log('# baselines: memcpy and net, both 2 processes whatever N (bench/sendrecv-baselines.mjs)');
else console.log(`# gloo: ${haveTorch ? 'yes' : 'skipped (apt-get install python3-torch)'}; mpi: ${haveMpi ? 'yes' : 'skipped (apt-get install openmpi-bin python3-mpi4py)'}${args.ceiling ? `; tcp-ring: ${haveNumpy ? 'yes (bench/tcp_ring.py, 1 stream per link, 1 MiB chunks)' : 'skipped (apt-get install python3-numpy)'}` : ''}`);
if (hosts) console.log(`# across hosts: ${hosts.join(', ')} (${perHost} rank${perHost > 1 ? 's' : ''} each) via '${rsh}'${iface ? `, interface ${iface}` : ''}; ranks unbound (--bind-to none)`);
if (Object.keys(rrEnv).length) console.log(`# ringreduce ranks with ${Object.entries(rrEnv).map(([k, v]) => `${k}=${v}`).join(' ')}`);
const dir = mkdtempSync(join(tmpdir(), 'rr-compare-'));
const busbw = (bytes, us, n) => (bytes / (us * 1e-6) / 1e9) * OP_INFO[op].busFactor(n);
/** The sizes at N ranks: ops that split a size into N parts round it to a multiple of 4N, as ringrun bench does. */
const sizesAt = (n) => rowSizes(op, sizes, n);
const groupsOf = (list) => [list.filter((s) => s <= SMALL), list.filter((s) => s > SMALL)].filter((g) => g.length > 0);

/** Runs a measurement; on failure prints a note (e.g. an op this build or this torch lacks) and returns no rows. */
async function orSkip(what, run) {
  try {
    return await run();
  } catch (e) {
    const why = String(e.stderr ?? e.message).trim().split('\n').filter(Boolean).pop() ?? '';
    console.log(`# ${what}: skipped (${why})`);
    return {};
  }
}

const ringrun = join(root, 'bin', 'ringrun.js');
function ringreduce(n, { compression, env = {} } = {}) {
  const out = {};
  env = { ...rrEnv, ...env };
  for (const s of sizesAt(n)) {
    const json = join(dir, `rr-${n}-${compression ?? 'plain'}-${Object.keys(env).length ? 'env' : 'default'}-${s}.json`);
    const p = plan(s);
    if (hosts) {
      // ringrun bench has no -H: its ranks (dist/launcher/bench/worker.js, configured through
      // RINGREDUCE_BENCH, as ringrun bench does) under ringrun -H; rank 0 writes the JSON.
      const config = { np: n, minBytes: s, maxBytes: s, factor: 2, op, reduce: 'sum', compression: compression ?? 'none', iters: p.iters, warmup: p.warmup, check: false, json, bars: false, progress: false };
      execFileSync(process.execPath, [ringrun, '-H', hosts.map((h) => `${h}:${perHost}`).join(','), '--rsh', rsh, ...(iface ? ['--iface', iface] : []), '--bind-to', 'none',
        '-x', `RINGREDUCE_BENCH=${JSON.stringify(config)}`, ...Object.entries(env).flatMap(([k, v]) => ['-x', `${k}=${v}`]), process.execPath, join(root, 'dist', 'launcher', 'bench', 'worker.js')],
        { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    } else {
      execFileSync(process.execPath, [ringrun, 'bench', '-np', String(n), '--op', op, '--min-bytes', String(s), '--max-bytes', String(s),
        '--iters', String(p.iters), '--warmup', String(p.warmup), ...(compression ? ['--compression', compression] : []), '--json', json],
        { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', env: { ...process.env, ...env } });
    }
    out[s] = JSON.parse(readFileSync(json, 'utf8')).rows[0].timeUs;
  }
  return out;
}
function rows(stdout, baseline) {
  return Object.fromEntries(stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((r) => r.baseline === baseline).map((r) => [r.bytes, r.timeUs]));
}
/** The rows of run(plan, sizes) over the size groups, one group after the other. */
async function each(list, run) {
  const out = {};
  for (const g of groupsOf(list)) Object.assign(out, await run(plan(g[0]), g));
  return out;
}
const shq = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
/** Runs argv; resolves with its stdout, or rejects with its stderr (as execFileSync's errors carry it). */
function runAsync(argv, children) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.on('error', (e) => reject(Object.assign(e, { stderr })));
    child.on('close', (code, signal) => {
      children.delete(child);
      if (code === 0) resolve(stdout);
      else reject(Object.assign(new Error(`${argv.join(' ')}: exit ${code ?? signal}`), { stderr: stderr || `exit ${code ?? signal}` }));
    });
  });
}
/**
 * One rank of a Python script per process (Gloo's bench/gloo_OP.py, or bench/tcp_ring.py), each
 * started on its host through the rsh command and found through RANK, WORLD_SIZE, MASTER_ADDR and
 * MASTER_PORT as torch.distributed does; ifaceVar names the interface to it. Rank 0 prints the rows.
 */
async function pythonAcross(script, ifaceVar, n, p, g) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const children = new Set();
  const ranks = Array.from({ length: n }, (_, r) => {
    const vars = [...(iface ? [`${ifaceVar}=${shq(iface)}`] : []), `RANK=${r}`, `WORLD_SIZE=${n}`, `MASTER_ADDR=${shq(hosts[0])}`, `MASTER_PORT=${port}`];
    const cmd = `cd ${shq(here)} && exec env ${vars.join(' ')} ${py} ${shq(join(here, script))} ${n} ${p.iters} ${p.warmup} ${g.join(' ')}`;
    return runAsync([...rsh.split(/\s+/).filter(Boolean), hosts[Math.floor(r / perHost)], cmd], children);
  });
  try {
    return rows((await Promise.all(ranks))[0]);
  } finally {
    // One rank failed: the others would wait for it forever.
    for (const c of children) c.kill('SIGKILL');
    await Promise.allSettled(ranks);
  }
}
/** A Python baseline's rows: its ranks on the hosts, or all N here (the script starts them). */
const python = (script, ifaceVar) => (n) => each(sizesAt(n), async (p, g) => (hosts ? pythonAcross(script, ifaceVar, n, p, g)
  : rows(execFileSync(py, [join(here, script), String(n), String(p.iters), String(p.warmup), ...g.map(String)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }))));
const gloo = python(`gloo_${op}.py`, 'GLOO_SOCKET_IFNAME');
const tcpRing = python('tcp_ring.py', 'TCP_RING_IFNAME');
/** Across hosts: mpirun starts its daemons through the rsh command, each session directory under a base of this run's own. */
const mpiAcross = () => {
  if (!hosts) return ['--oversubscribe'];
  const sessions = join(dir, `ompi-${Date.now()}`);
  mkdirSync(sessions);
  const ifs = iface ? ['--mca', 'btl_tcp_if_include', iface, '--mca', 'oob_tcp_if_include', iface] : [];
  return ['-H', hosts.map((h) => `${h}:${perHost}`).join(','), '--bind-to', 'none', '--mca', 'plm_rsh_agent', rsh, ...ifs, '--mca', 'orte_tmpdir_base', sessions];
};
const mpi = (n) => each(sizesAt(n), async (p, g) => rows(execFileSync('mpirun', ['--allow-run-as-root', ...mpiAcross(), '-np', String(n), '--mca', 'btl', 'tcp,self', py, join(here, `mpi_${op}.py`),
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
      ...(args.ceiling ? { 'tcp-ring': () => (haveNumpy ? tcpRing(n) : {}) } : {}),
    }),
    ratios: [['rr-none', 'gloo', 'busbw'], ['rr-none', 'mpi-tcp', 'busbw'], ['rr-fp16', 'gloo', 'busbw'], ['rr-none', 'gloo', 'time'],
      ...(args.ceiling ? [['rr-none', 'tcp-ring', 'busbw'], ['gloo', 'tcp-ring', 'busbw']] : [])],
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
    const r = {};
    for (const [k, run] of Object.entries(series(n))) r[k] = await orSkip(`${k} at N=${n}`, run);
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
