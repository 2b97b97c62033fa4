#!/usr/bin/env node
// Soak test: N real rank processes (started with ringrun) run thousands of random collectives and
// check every result exactly. See --help.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const HELP = `Usage: node bench/soak.mjs [options]

Starts --np ranks with ringrun (real processes over WebSockets); every rank draws the same random
sequence of collectives from --seed and checks every result exactly:

  allreduce      sum / min / max / product / average; float32, float64, int32, int16, uint8;
                 float32 also with fp16 or bf16 wire compression
  allgather      per-rank lengths differ (and may be 0)
  broadcast      from a random root
  reducescatter  sum / min / max / product / average
  barrier

Sizes are 0, a few elements, or log-uniform up to --max-bytes per rank. Data are integers chosen
so that every partial result is exact in the dtype (and, compressed, in fp16: |x| <= 2048/N, or
bf16: |x| <= 256/N; average sums to a multiple of N), so "wrong" means any bit differs from the
float64 reference.

Options:
  --np N            ranks (default 3)
  --ops N           collectives per rank (default 5000)
  --seed N          the shared random seed (default 1)
  --max-bytes SIZE  largest buffer per rank, e.g. 4MiB, 512KiB, 65536 (default 4MiB)
  --timeout SEC     stop the job after SEC seconds (default: none)
  --json            print the summary as one JSON object instead of a table
  -h, --help        this text

Output: ops, bytes per rank, wrong results, errors, RSS (and V8 heap, ArrayBuffer memory) per rank
at start (after init), after 10% of the ops (warm) and at the end, each after a full GC, and the
duration. Exit status 0 only if
every op ran and none was wrong.`;

function parseSize(s) {
  const m = /^(\d+(?:\.\d+)?)\s*(|b|k|kb|kib|m|mb|mib|g|gib)$/i.exec(String(s).trim());
  if (!m) throw new Error(`--max-bytes: cannot read '${s}' (e.g. 4MiB, 512KiB, 65536)`);
  const unit = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1 << 20, mb: 1 << 20, mib: 1 << 20, g: 1 << 30, gib: 1 << 30 }[m[2].toLowerCase()];
  return Math.floor(Number(m[1]) * unit);
}

function parseArgs(argv) {
  const o = { np: 3, ops: 5000, seed: 1, maxBytes: 4 << 20, timeout: 0, json: false, worker: false };
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
    else if (flag === '--worker') o.worker = true;
    else throw new Error(`unknown option ${a} (see --help)`);
  }
  if (o.maxBytes < 8) throw new Error('--max-bytes must be at least 8');
  return o;
}

/** mulberry32: the same sequence from the same seed on every rank. */
function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n) => Math.floor(next() * n), pick: (xs) => xs[Math.floor(next() * xs.length)] };
}

const DTYPES = {
  float32: { ctor: Float32Array, bytes: 4, limit: 2 ** 24, signed: true },
  float64: { ctor: Float64Array, bytes: 8, limit: 2 ** 40, signed: true },
  int32: { ctor: Int32Array, bytes: 4, limit: 2 ** 30, signed: true },
  int16: { ctor: Int16Array, bytes: 2, limit: 2 ** 15 - 1, signed: true },
  uint8: { ctor: Uint8Array, bytes: 1, limit: 255, signed: false },
};
const COMPRESSION_LIMIT = { fp16: 2048, bf16: 256 };
const REDUCE_OPS = ['sum', 'min', 'max', 'product', 'average'];

/** Element count for one rank's buffer: 0, a handful, or log-uniform bytes up to maxBytes. */
function drawCount(rng, elemBytes, maxBytes, n) {
  const r = rng.next();
  if (r < 0.04) return 0;
  if (r < 0.12) return 1 + rng.int(2 * n + 3);
  const bytes = Math.exp(rng.next() * Math.log(maxBytes / elemBytes)) * elemBytes;
  return Math.max(1, Math.floor(bytes / elemBytes));
}

/**
 * The i-th collective: every field comes from the shared generator, so every rank draws the same.
 * value(r, i) is rank r's i-th input element; see the --help text for why results are exact.
 */
function drawOp(rng, n, maxBytes) {
  const u = rng.next();
  const kind = u < 0.5 ? 'allreduce' : u < 0.62 ? 'allgather' : u < 0.76 ? 'broadcast' : u < 0.92 ? 'reducescatter' : 'barrier';
  const op = kind === 'allreduce' || kind === 'reducescatter' ? rng.pick(REDUCE_OPS) : '';
  let compression = 'none';
  let dtype = rng.pick(['float32', 'float32', 'float32', 'float64', 'int32', 'int16', 'uint8']);
  if (kind === 'allreduce' && rng.next() < 0.5) {
    compression = rng.pick(['fp16', 'bf16']);
    dtype = 'float32';
  }
  const dt = DTYPES[dtype];
  const counts = Array.from({ length: n }, () => drawCount(rng, dt.bytes, kind === 'allgather' ? Math.max(8, maxBytes / n) : maxBytes, n));
  const count = counts[0];
  const root = rng.int(n);
  const a = 1 + rng.int(1_000_003);
  const b = rng.int(1_000_003);
  const c = 1 + rng.int(997);
  // Largest |value| such that every partial result of N values stays exact.
  const limit = Math.min(dt.limit, COMPRESSION_LIMIT[compression] ?? Infinity);
  const maxAbs = Math.max(n, Math.floor(limit / n));
  let value;
  if (op === 'product') {
    value = dt.signed ? (r, i) => ((i * a + b + r * c) % 4) - 1 : (r, i) => (i * a + b + r * c) % 3;
  } else if (op === 'average') {
    // Rank offsets 2r-(N-1) sum to 0: the sum is N*base, the average exactly base.
    const lo = dt.signed ? -(maxAbs - (n - 1)) : n - 1;
    const span = (dt.signed ? 2 * (maxAbs - (n - 1)) : maxAbs - 2 * (n - 1)) + 1;
    value = (r, i) => ((i * a + b) % span) + lo + 2 * r - (n - 1);
  } else {
    const lo = dt.signed ? -maxAbs : 0;
    const span = (dt.signed ? 2 * maxAbs : maxAbs) + 1;
    value = (r, i) => ((i * a + b + r * c) % span) + lo;
  }
  return { kind, op, dtype, compression, counts, count, root, value };
}

function fill(ctor, count, f) {
  const x = new ctor(count);
  for (let i = 0; i < count; i++) x[i] = f(i);
  return x;
}

/** The exact reduction of element i over all ranks (float64; exact by construction). */
function reduced(op, n, value, i) {
  let acc = value(0, i);
  for (let r = 1; r < n; r++) {
    const v = value(r, i);
    if (op === 'sum' || op === 'average') acc += v;
    else if (op === 'min') acc = Math.min(acc, v);
    else if (op === 'max') acc = Math.max(acc, v);
    else acc *= v;
  }
  return op === 'average' ? acc / n : acc;
}

/** Returns undefined if `got` is exactly right, else a description of the first difference. */
function check(d, rank, n, got) {
  const want = (i, w) => (got[i] === w ? undefined : `element ${i}: got ${got[i]}, want ${w}`);
  if (d.kind === 'barrier') return got === undefined ? undefined : 'barrier returned a value';
  if (d.kind === 'broadcast') {
    if (got.length !== d.count) return `length ${got.length}, want ${d.count}`;
    for (let i = 0; i < got.length; i++) if (got[i] !== d.value(d.root, i)) return want(i, d.value(d.root, i));
    return undefined;
  }
  if (d.kind === 'allgather') {
    const total = d.counts.reduce((s, c) => s + c, 0);
    if (got.length !== total) return `length ${got.length}, want ${total}`;
    let k = 0;
    for (let r = 0; r < n; r++) for (let i = 0; i < d.counts[r]; i++, k++) if (got[k] !== d.value(r, i)) return want(k, d.value(r, i));
    return undefined;
  }
  let offset = 0;
  let length = d.count;
  if (d.kind === 'reducescatter') {
    const base = Math.floor(d.count / n);
    const rem = d.count % n;
    offset = rank * base + Math.min(rank, rem);
    length = base + (rank < rem ? 1 : 0);
  }
  if (got.length !== length) return `length ${got.length}, want ${length}`;
  for (let i = 0; i < length; i++) {
    const w = reduced(d.op, n, d.value, offset + i);
    if (got[i] !== w) return want(i, w);
  }
  return undefined;
}

/** RSS, V8 heap in use and ArrayBuffer memory, after a full GC (the ranks run with --expose-gc). */
function memory() {
  globalThis.gc?.();
  globalThis.gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed, arrayBuffers: m.arrayBuffers };
}

async function worker(o) {
  const rr = await import('../dist/index.js');
  await rr.init();
  const rank = rr.rank();
  const n = rr.size();
  const rng = prng(o.seed);
  const out = { rank, ops: 0, bytes: 0, wrong: 0, errors: 0, firstProblems: [], kinds: {}, memStart: memory(), memWarm: undefined, memEnd: undefined };
  const warmAt = Math.floor(o.ops / 10);
  const t0 = Date.now();
  for (let k = 0; k < o.ops; k++) {
    if (k === warmAt) out.memWarm = memory();
    const d = drawOp(rng, n, o.maxBytes);
    const dt = DTYPES[d.dtype];
    const mine = d.kind === 'allgather' ? d.counts[rank] : d.count;
    const x = d.kind === 'barrier' ? undefined : fill(dt.ctor, mine, (i) => d.value(rank, i));
    const label = `${d.kind}${d.op ? ` ${d.op}` : ''} ${d.dtype}${d.compression !== 'none' ? ` ${d.compression}` : ''}`;
    const name = `soak-${k}`;
    try {
      let got;
      if (d.kind === 'allreduce') got = await rr.allreduce(x, { op: d.op, compression: d.compression, name });
      else if (d.kind === 'reducescatter') got = await rr.reducescatter(x, { op: d.op, name });
      else if (d.kind === 'allgather') got = await rr.allgather(x, { name });
      else if (d.kind === 'broadcast') got = await rr.broadcast(x, { root: d.root, name });
      else got = await rr.barrier({ name });
      const problem = check(d, rank, n, got);
      if (problem) {
        out.wrong++;
        if (out.firstProblems.length < 5) out.firstProblems.push(`op ${k} (${label}, count ${d.count}): ${problem}`);
      }
    } catch (e) {
      out.errors++;
      out.firstProblems.push(`op ${k} (${label}): ${e.code ?? e.name}: ${e.message}`);
      break; // a failed ring stays failed: every later call would raise the same error
    }
    out.ops++;
    out.bytes += x ? x.byteLength : 0;
    const kk = d.kind === 'allreduce' && d.compression !== 'none' ? `allreduce ${d.compression}` : d.kind;
    out.kinds[kk] = (out.kinds[kk] ?? 0) + 1;
    if (rank === 0 && o.ops >= 10 && (k + 1) % Math.ceil(o.ops / 10) === 0) {
      console.error(`soak: ${k + 1}/${o.ops} ops, ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB RSS, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  }
  out.durationMs = Date.now() - t0;
  out.memWarm ??= out.memStart;
  out.memEnd = memory();
  console.log(`SOAK_RESULT ${JSON.stringify(out)}`);
  await rr.shutdown();
}

async function launch(o) {
  const args = [
    join(here, '..', 'bin', 'ringrun.js'),
    '-np', String(o.np),
    ...(o.timeout ? ['--timeout', String(o.timeout)] : []),
    '--', process.execPath, '--expose-gc', fileURLToPath(import.meta.url), '--worker',
    '--ops', String(o.ops), '--seed', String(o.seed), '--max-bytes', String(o.maxBytes),
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
    command: `node bench/soak.mjs --np ${o.np} --ops ${o.ops} --seed ${o.seed} --max-bytes ${o.maxBytes}`,
    np: o.np,
    seed: o.seed,
    maxBytes: o.maxBytes,
    opsRequested: o.ops,
    ranksReported: results.length,
    ops: results.map((r) => r.ops),
    bytesPerRank: results.map((r) => r.bytes),
    wrong: results.reduce((s, r) => s + r.wrong, 0),
    errors: results.reduce((s, r) => s + r.errors, 0),
    kinds: results[0]?.kinds ?? {},
    rssMiB: results.map((r) => ({ rank: r.rank, start: mib(r.memStart.rss), warm: mib(r.memWarm.rss), end: mib(r.memEnd.rss) })),
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
      console.log(`  RSS rank ${r.rank}   start ${r.start} MiB, after 10% ${r.warm} MiB, end ${r.end} MiB (V8 heap ${h.start} / ${h.warm} / ${h.end} MiB, ArrayBuffers ${ab.start} / ${ab.warm} / ${ab.end} MiB, after GC)`);
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
