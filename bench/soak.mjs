#!/usr/bin/env node
// Soak test: N real rank processes (started with ringrun) run thousands of random collectives,
// point-to-point ops and group ops, and check every result exactly. See --help. The op kinds
// live in soak/ (mix.mjs: which comes next and how it runs).
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { drawOp, makeGroups, runOp } from './soak/mix.mjs';
import { prng } from './soak/random.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const HELP = `Usage: node bench/soak.mjs [options]

Starts --np ranks with ringrun (real processes over WebSockets); every rank draws the same random
sequence of operations from --seed and checks every result exactly:

  allreduce      sum / min / max / product / average; float32, float64, int32, int16, uint8;
                 float32 also with fp16 or bf16 wire compression
  allgather      per-rank lengths differ (and may be 0)
  broadcast      from a random root
  reducescatter  sum / min / max / product / average
  barrier
  sendrecv       send/recv (N >= 2): 1 to 5 messages at once, message j going from every rank r
                 to r + k_j (mod N) with tag t_j, each rank posting its sends and recvs in its
                 own random order (Promise.all); sizes 0, eager (below, at and just over 64 KiB)
                 or large up to --max-bytes in all
  alltoall       random splits per (sender, receiver) pair, zeros and uneven ones included, or
                 none (even); result data and splits both checked
  group <kind>   (N >= 2) at start every rank makes two groups with newGroup, the even ranks and
                 all but rank 0; a group op runs one of allreduce, allgather, broadcast,
                 reducescatter, alltoall or sendrecv (equal odds) inside one of them on its
                 members while every rank runs a world op at the same time (Promise.all)

Collectives are about 70% of the ops, sendrecv 11%, alltoall 9% and group ops 8%. Sizes are 0, a
few elements, or log-uniform up to --max-bytes per rank (a group op's two ops get half each).
Data are integers chosen so that every partial result is exact in the dtype (and, compressed, in
fp16: |x| <= 2048/N, or bf16: |x| <= 256/N; average sums to a multiple of N), so "wrong" means
any bit differs from the float64 reference.

Options:
  --np N            ranks (default 3)
  --ops N           operations per rank (default 5000)
  --seed N          the shared random seed (default 1)
  --max-bytes SIZE  largest buffer per rank, e.g. 4MiB, 512KiB, 65536 (default 4MiB)
  --timeout SEC     stop the job after SEC seconds (default: none)
  --attack          while the ops run, rank 0's child attacks the job's store and every rank's
                    port as a stranger and as a token holder (bench/soak/attacker.mjs: idle
                    connections, junk, oversized frames, refused handshakes); results must still
                    be exact and RSS flat
  --json            print the summary as one JSON object instead of a table
  -h, --help        this text

Output: ops (and how many of each kind), bytes per rank, wrong results, errors, RSS (and V8 heap,
ArrayBuffer memory) per rank at start (after init and newGroup), after 10% of the ops (warm) and
at the end, each after a full GC, and the duration. Exit status 0 only if every op ran and none
was wrong.`;

function parseSize(s) {
  const m = /^(\d+(?:\.\d+)?)\s*(|b|k|kb|kib|m|mb|mib|g|gib)$/i.exec(String(s).trim());
  if (!m) throw new Error(`--max-bytes: cannot read '${s}' (e.g. 4MiB, 512KiB, 65536)`);
  const unit = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1 << 20, mb: 1 << 20, mib: 1 << 20, g: 1 << 30, gib: 1 << 30 }[m[2].toLowerCase()];
  return Math.floor(Number(m[1]) * unit);
}

function parseArgs(argv) {
  const o = { np: 3, ops: 5000, seed: 1, maxBytes: 4 << 20, timeout: 0, json: false, worker: false, attack: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const int = (name, min) => {
      const v = Number(value());
      if (!Number.isSafeInteger(v) || v < min) throw new Error(`${name} must be an integer >= ${min}`);
      return v;
    };
    if (flag === '-h' || flag === '--help') o.help = true;
    else if (flag === '--np') o.np = int('--np', 1);
    else if (flag === '--ops') o.ops = int('--ops', 0);
    else if (flag === '--seed') o.seed = int('--seed', 0);
    else if (flag === '--max-bytes') o.maxBytes = parseSize(value());
    else if (flag === '--timeout') o.timeout = int('--timeout', 0);
    else if (flag === '--json') o.json = true;
    else if (flag === '--attack') o.attack = true;
    else if (flag === '--worker') o.worker = true;
    else throw new Error(`unknown option ${a} (see --help)`);
  }
  if (o.maxBytes < 8) throw new Error('--max-bytes must be at least 8');
  return o;
}

/** RSS, V8 heap in use and ArrayBuffer memory, after a full GC (the ranks run with --expose-gc). */
function memory() {
  globalThis.gc?.();
  globalThis.gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed, arrayBuffers: m.arrayBuffers };
}

/** Rank 0's attacker child (--attack), started before init: it reads the addresses from the store. */
function startAttacker(o) {
  if (!o.attack || process.env.RANK !== '0') return undefined;
  const env = { ...process.env, SOAK_ATTACK_STORE: process.env.RINGRUN_STORE, SOAK_ATTACK_TOKEN: process.env.RINGRUN_TOKEN, SOAK_ATTACK_NP: process.env.WORLD_SIZE, SOAK_ATTACK_SEED: String(o.seed) };
  return spawn(process.execPath, [join(here, 'soak', 'attacker.mjs')], { env, stdio: ['ignore', 'inherit', 'inherit'] });
}

async function worker(o) {
  const rr = await import('../dist/index.js');
  const attacker = startAttacker(o);
  await rr.init();
  const rank = rr.rank();
  const n = rr.size();
  const rng = prng(o.seed);
  const world = { rank, size: n, api: rr };
  const out = { rank, ops: 0, bytes: 0, wrong: 0, errors: 0, firstProblems: [], kinds: {}, memStart: undefined, memWarm: undefined, memMid: undefined, memEnd: undefined };
  let groups = [];
  try {
    groups = await makeGroups(rr, rank, n);
  } catch (e) {
    out.errors++;
    out.firstProblems.push(`newGroup: ${e.code ?? e.name}: ${e.message}`);
  }
  out.memStart = memory();
  const warmAt = Math.floor(o.ops / 10);
  const midAt = Math.floor(o.ops / 2);
  const t0 = Date.now();
  for (let k = 0; k < o.ops && out.errors === 0; k++) {
    if (k === warmAt) out.memWarm = memory();
    if (k === midAt) out.memMid = memory();
    const d = drawOp(rng, n, o.maxBytes);
    try {
      const { problem, bytes } = await runOp(d, world, groups, `soak-${k}`);
      if (problem) {
        out.wrong++;
        if (out.firstProblems.length < 5) out.firstProblems.push(`op ${k} (${d.label}): ${problem}`);
      }
      out.bytes += bytes;
    } catch (e) {
      out.errors++;
      out.firstProblems.push(`op ${k} (${d.label}): ${e.code ?? e.name}: ${e.message}`);
      break; // a failed ring stays failed: every later call would raise the same error
    }
    out.ops++;
    out.kinds[d.tally] = (out.kinds[d.tally] ?? 0) + 1;
    if (rank === 0 && o.ops >= 10 && (k + 1) % Math.ceil(o.ops / 10) === 0) {
      console.error(`soak: ${k + 1}/${o.ops} ops, ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB RSS, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  }
  out.durationMs = Date.now() - t0;
  out.memWarm ??= out.memStart;
  out.memMid ??= out.memWarm;
  out.memEnd = memory();
  if (attacker) {
    attacker.kill('SIGTERM');
    await new Promise((r) => (attacker.exitCode !== null ? r() : attacker.once('exit', r)));
  }
  console.log(`SOAK_RESULT ${JSON.stringify(out)}`);
  await rr.shutdown();
}

async function launch(o) {
  const args = [
    join(here, '..', 'bin', 'ringrun.js'),
    '-np', String(o.np),
    ...(o.timeout ? ['--timeout', String(o.timeout)] : []),
    '--', process.execPath, '--expose-gc', fileURLToPath(import.meta.url), '--worker',
    '--ops', String(o.ops), '--seed', String(o.seed), '--max-bytes', String(o.maxBytes), ...(o.attack ? ['--attack'] : []),
  ];
  const t0 = Date.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const results = [];
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const m = /SOAK_RESULT (\{.*\})\s*$/.exec(line);
      if (m) results.push(JSON.parse(m[1]));
      else process.stderr.write(`${line}\n`);
    }
  });
  const code = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? 128 + (s === 'SIGKILL' ? 9 : 15))));
  results.sort((a, b) => a.rank - b.rank);
  const mib = (b) => +(b / 2 ** 20).toFixed(1);
  const summary = {
    command: `node bench/soak.mjs --np ${o.np} --ops ${o.ops} --seed ${o.seed} --max-bytes ${o.maxBytes}${o.attack ? ' --attack' : ''}`,
    np: o.np,
    seed: o.seed,
    maxBytes: o.maxBytes,
    opsRequested: o.ops,
    ranksReported: results.length,
    ops: results.map((r) => r.ops),
    bytesPerRank: results.map((r) => r.bytes),
    wrong: results.reduce((s, r) => s + r.wrong, 0),
    errors: results.reduce((s, r) => s + r.errors, 0),
    kinds: Object.fromEntries(Object.entries(results[0]?.kinds ?? {}).sort(([a], [b]) => a.localeCompare(b))),
    rssMiB: results.map((r) => ({ rank: r.rank, start: mib(r.memStart.rss), warm: mib(r.memWarm.rss), mid: mib(r.memMid.rss), end: mib(r.memEnd.rss) })),
    heapMiB: results.map((r) => ({ rank: r.rank, start: mib(r.memStart.heap), warm: mib(r.memWarm.heap), end: mib(r.memEnd.heap) })),
    arrayBuffersMiB: results.map((r) => ({ rank: r.rank, start: mib(r.memStart.arrayBuffers), warm: mib(r.memWarm.arrayBuffers), end: mib(r.memEnd.arrayBuffers) })),
    problems: results.flatMap((r) => r.firstProblems.map((p) => `rank ${r.rank}: ${p}`)),
    durationS: +((Date.now() - t0) / 1000).toFixed(1),
    opsDurationS: results.map((r) => +(r.durationMs / 1000).toFixed(1)),
    exitCode: code,
  };
  const ok = code === 0 && results.length === o.np && summary.wrong === 0 && summary.errors === 0 && results.every((r) => r.ops === o.ops);
  if (o.json) console.log(JSON.stringify(summary));
  else {
    const gib = (b) => (b / 2 ** 30).toFixed(2);
    console.log(`soak: ${summary.command}`);
    console.log(`  ops          ${summary.ops.join(' / ')} of ${o.ops} per rank (${Object.entries(summary.kinds).map(([k, v]) => `${k} ${v}`).join(', ')})`);
    console.log(`  bytes        ${summary.bytesPerRank.map(gib).join(' / ')} GiB of input per rank (max ${mib(o.maxBytes)} MiB per op)`);
    console.log(`  wrong        ${summary.wrong}`);
    console.log(`  errors       ${summary.errors}`);
    summary.rssMiB.forEach((r, k) => {
      const h = summary.heapMiB[k];
      const ab = summary.arrayBuffersMiB[k];
      console.log(`  RSS rank ${r.rank}   start ${r.start} MiB, after 10% ${r.warm} MiB, after 50% ${r.mid} MiB, end ${r.end} MiB (V8 heap ${h.start} / ${h.warm} / ${h.end} MiB, ArrayBuffers ${ab.start} / ${ab.warm} / ${ab.end} MiB, after GC)`);
    });
    console.log(`  duration     ${summary.durationS} s (ops loop ${summary.opsDurationS.join(' / ')} s per rank)`);
    for (const p of summary.problems) console.log(`  problem      ${p}`);
    console.log(`  result       ${ok ? 'OK' : `FAILED (ringrun exit ${code})`}`);
  }
  process.exitCode = ok ? 0 : 1;
}

let o;
try {
  o = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(`soak: ${e.message}`);
  process.exit(2);
}
if (o.help) console.log(HELP);
else if (o.worker) await worker(o);
else await launch(o);
