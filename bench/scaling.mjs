// Data-parallel scaling of tfjs training with ringreduce (project issue 3): throughput for N=1 and
// N=2 ranks at the same per-rank batch, the share of a step spent in the gradient all-reduce, and
// scaling efficiency = throughput(N=2) / (2 x throughput(N=1)). A benchmark that prints figures,
// not a test.
//
//   node bench/scaling.mjs [--model cnn|mlp|all] [--steps K] [--warmup 3] [--repeat 1] [--batch B]
//                          [--np 1,2,1x2] [--optimizer sgd|adam] [--no-fast-conv]
//
// --model takes a comma list of cnn, mlp, or model:batch (e.g. mlp:4); all = cnn,mlp,mlp:4.
// --np 1x2 adds a control row: two independent N=1 jobs at the same time (no communication at
// all), i.e. what sharing the machine's cores alone costs; its "efficiency" is the ceiling for N=2.
// --steps defaults per model (cnn 50, mlp 10 at batch 32, mlp:4 30).
//
// The driver (this file without --worker) runs, for each model, `node bin/ringrun.js -np N node
// bench/scaling.mjs --worker ...` for each N, one after the other (N=1 also through ringrun, so
// the startup paths are identical; repeats are interleaved), and prints two tables. Each worker
// rank runs a custom training loop on random data with a real DistributedOptimizer (inner
// optimizer: plain SGD by default, as Horovod's synthetic benchmark, so that the per-rank update
// does not drown the rest; --optimizer adam for Adam) and times per step:
//   compute = tf.variableGrads (forward + backward; the CPU backend is synchronous)
//   apply   = opt.applyGradients: gradient copy into the shared buffer, the ring all-reduce on the
//             comm worker (the main thread blocks), and the inner optimizer's update
//   opt     = the inner optimizer's applyGradients (wrapped and timed)
//   comm    = apply - opt: everything the distributed optimizer adds, including waiting for the
//             slower rank ("wait", from every rank's per-step local work) and the rest
// Step time is the slowest rank's; examples/s = N x batch x steps / (slowest rank's wall time).
// After the loop each rank also times, right after a barrier, applyGradients on fixed gradients
// ("comm alone") and a plain rr.allreduce of the same number of floats, and reports the CPU its
// threads used and what the rest of the (shared) machine used, from /proc.
//
// Profile a rank: node bin/ringrun.js -np 2 node --cpu-prof --cpu-prof-dir=prof bench/scaling.mjs \
//   --worker --model cnn --batch 32 --steps 100 --warmup 3   (one profile per thread and rank)
import { spawn } from 'node:child_process';
import * as fsSync from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const self = relative(process.cwd(), fileURLToPath(import.meta.url)) || fileURLToPath(import.meta.url);

const usage = `Usage: node bench/scaling.mjs [--model cnn|mlp|all|model:batch,...] [--steps K] [--warmup 3] [--repeat 1]
                              [--batch B] [--np 1,2,1x2] [--optimizer sgd|adam] [--no-fast-conv] [--allreduce-iters 10]

Throughput of tfjs training for N=1 and N=2 ranks at the same per-rank batch, the share of a step
spent in the gradient all-reduce, and scaling efficiency = throughput(N=2) / (2 x throughput(N=1)).
--np 1x2 adds two independent N=1 jobs at once: the machine's no-communication ceiling.
`;
let parsed;
try {
  parsed = parseArgs({ options: {
    help: { type: 'boolean', short: 'h', default: false },
    worker: { type: 'boolean', default: false },
    model: { type: 'string', default: 'all' },
    steps: { type: 'string' },
    warmup: { type: 'string', default: '3' },
    repeat: { type: 'string', default: '1' },
    batch: { type: 'string' }, // per rank; default per model
    np: { type: 'string', default: '1,2,1x2' },
    optimizer: { type: 'string', default: 'sgd' },
    'no-fast-conv': { type: 'boolean', default: false },
    'allreduce-iters': { type: 'string', default: '10' },
    // (worker, 1x2 control) a directory through which independent jobs line up their timed phases
    sync: { type: 'string' },
  } });
} catch (e) {
  process.stderr.write(`scaling: ${e.message}\n\n${usage}`);
  process.exit(2);
}
const a = parsed.values;
if (a.help) {
  process.stdout.write(usage);
  process.exit(0);
}

const MODELS = {
  // The MNIST example's CNN: compute-heavy, 13k parameters (52 KB of gradients per step).
  cnn: { batch: 32, steps: 50 },
  // Communication-heavy: 5.8M parameters (23 MB of gradients per step), small batch.
  mlp: { batch: 32, steps: 10 },
};
const ALL = ['cnn', 'mlp', 'mlp:4'];
/** 'mlp:4' -> { model: 'mlp', batch: 4, steps } */
function spec(s) {
  const [model, b] = s.split(':');
  if (!MODELS[model]) throw new Error(`--model: unknown model '${model}' (cnn, mlp, model:batch or all)`);
  const batch = Number(b ?? a.batch ?? MODELS[model].batch);
  const steps = Number(a.steps ?? (model === 'mlp' && batch < 16 ? 30 : MODELS[model].steps));
  return { model, batch, steps };
}

if (a.worker) await worker();
else await driver();

// ---------------------------------------------------------------------------------------------
async function worker() {
  const tf = await import('@tensorflow/tfjs');
  const rr = await import('ringreduce');
  await rr.init();
  const rank = rr.rank();
  const size = rr.size();
  tf.enableProdMode();
  await tf.setBackend('cpu');

  const name = a.model;
  const batch = Number(a.batch);
  const steps = Number(a.steps);
  const warmup = Number(a.warmup);
  let model;
  let x;
  if (name === 'cnn') {
    const { buildCnn } = await import('../examples/mnist/model.js');
    if (!a['no-fast-conv']) (await import('../examples/mnist/fast-conv-grad.js')).installFastConvGrad(tf);
    model = buildCnn(tf);
    x = tf.randomUniform([batch, 28, 28, 1]);
  } else if (name === 'mlp') {
    model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [784], units: 2048, activation: 'relu' }),
        tf.layers.dense({ units: 2048, activation: 'relu' }),
        tf.layers.dense({ units: 10, activation: 'softmax' }),
      ],
    });
    x = tf.randomUniform([batch, 784]);
  } else throw new Error(`unknown model '${name}'`);
  // Random inputs and labels (timing does not depend on the values); different on every rank.
  const y = tf.oneHot(tf.randomUniform([batch], 0, 10, 'int32'), 10).toFloat();

  const inner = a.optimizer === 'adam' ? tf.train.adam(1e-3) : tf.train.sgd(0.01);
  const opt = new rr.DistributedOptimizer(inner, { op: 'average' });
  let innerMs = 0;
  const innerApply = inner.applyGradients.bind(inner);
  inner.applyGradients = (g) => {
    const s = performance.now();
    innerApply(g);
    innerMs += performance.now() - s;
  };
  await rr.broadcastVariables(model.trainableWeights, 0);
  const vars = model.trainableWeights.map((w) => w.val); // the tf.Variables behind the layers' weights
  const params = model.countParams();

  const step = () => {
    const t0 = performance.now();
    const { value, grads } = tf.variableGrads(() => tf.tidy(() => tf.mean(tf.metrics.categoricalCrossentropy(y, model.apply(x, { training: true })))), vars);
    const t1 = performance.now();
    innerMs = 0;
    opt.applyGradients(grads);
    const t2 = performance.now();
    tf.dispose([value, ...Object.values(grads)]);
    return { compute: t1 - t0, apply: t2 - t1, inner: innerMs, total: performance.now() - t0 };
  };

  for (let i = 0; i < warmup; i++) step(); // includes the comm worker's ring formation
  await rr.barrier();
  if (a.sync) await lineUp('start');
  const per = [];
  const cpu0 = threadCpu();
  const machine0 = machineCpu();
  const w0 = performance.now();
  for (let i = 0; i < steps; i++) per.push(step());
  const wall = performance.now() - w0;
  const cpu = threadCpuDelta(cpu0, threadCpu(), wall);
  const machine1 = machineCpu();
  cpu.machine = machine0 && machine1 ? ((machine1.busy - machine0.busy) / (machine1.total - machine0.total)) * machine1.cpus : NaN;
  // 1x2 control: keep the cores busy until the other job has finished its timed steps too.
  if (a.sync) await lineUp('end', step);

  // Communication without compute in between, barrier first (so no rank waits for another):
  // (a) the DistributedOptimizer's applyGradients minus its inner optimizer, on fixed gradients;
  // (b) a plain rr.allreduce of the same number of floats (the main thread's ring).
  const iters = Number(a['allreduce-iters']);
  const optTimes = [];
  const arTimes = [];
  if (size > 1) {
    const { value, grads } = tf.variableGrads(() => tf.tidy(() => tf.mean(tf.metrics.categoricalCrossentropy(y, model.apply(x, { training: true })))), vars);
    for (let i = 0; i < iters + 1; i++) {
      await rr.barrier();
      innerMs = 0;
      const s = performance.now();
      opt.applyGradients(grads);
      if (i > 0) optTimes.push(performance.now() - s - innerMs);
    }
    tf.dispose([value, ...Object.values(grads)]);
    const buf = new Float32Array(vars.reduce((n, v) => n + v.size, 0)).fill(1);
    for (let i = 0; i < iters + 1; i++) {
      await rr.barrier();
      const s = performance.now();
      await rr.allreduce(buf, { op: 'average', name: 'bench:ar' });
      if (i > 0) arTimes.push(performance.now() - s);
    }
  }

  // Waiting for the slower rank: per step, local work = step time - comm; a rank waits for the
  // slowest rank's local work (the ring finishes at about the same moment on every rank).
  const local = Float64Array.from(per, (p) => p.total - (p.apply - p.inner));
  const locals = await rr.allgather(local, { name: 'bench:local' });
  let wait = 0;
  for (let i = 0; i < steps; i++) {
    let hi = 0;
    for (let r = 0; r < size; r++) hi = Math.max(hi, locals[r * steps + i]);
    wait += hi - local[i];
  }
  wait /= steps;

  const mean = (k) => per.reduce((s, p) => s + p[k], 0) / per.length;
  const mine = [wall, mean('compute'), mean('apply'), mean('inner'), mean('apply') - mean('inner'), median(arTimes), median(optTimes), wait];
  const max = await rr.allreduce(Float64Array.from(mine), { op: 'max', name: 'bench:max' });
  const avg = await rr.allreduce(Float64Array.from(mine), { op: 'average', name: 'bench:avg' });
  const all = await rr.allgather(Float64Array.from(mine.slice(1, 3)), { name: 'bench:ranks' });
  const cpus = await gatherCpu(rr, cpu);
  if (rank === 0) {
    const r = {
      model: name,
      params,
      batch,
      n: size,
      steps,
      wallMs: max[0],
      exPerSec: (size * batch * steps) / (max[0] / 1000),
      stepMs: max[0] / steps,
      computeMs: avg[1],
      computeMaxMs: max[1],
      applyMs: avg[2],
      innerMs: avg[3],
      commMs: avg[4],
      allreduceMs: max[5],
      optCommMs: max[6],
      waitMs: avg[7],
      cpu: cpus,
      perRank: Array.from({ length: size }, (_, i) => ({ computeMs: all[2 * i], applyMs: all[2 * i + 1] })),
      kernels: rr.kernels.backend,
      optimizer: a.optimizer,
    };
    console.log(`RESULT ${JSON.stringify(r)}`);
  }
  await rr.shutdown();
}

/** Every rank's thread CPU summary (JSON through allgather of bytes). */
async function gatherCpu(rr, cpu) {
  const bytes = new TextEncoder().encode(JSON.stringify(cpu));
  const lens = await rr.allgather(Int32Array.of(bytes.length), { name: 'bench:cpulen' });
  const max = Math.max(...lens);
  const padded = new Uint8Array(max);
  padded.set(bytes);
  const all = await rr.allgather(padded, { name: 'bench:cpu' });
  return Array.from(lens, (l, r) => JSON.parse(new TextDecoder().decode(all.subarray(r * max, r * max + l))));
}

/** 1x2 control: announce `phase` in the sync directory, then wait (stepping, if given) until both jobs have. */
async function lineUp(phase, work) {
  fsSync.writeFileSync(join(a.sync, `${phase}.${process.pid}`), '');
  while (fsSync.readdirSync(a.sync).filter((f) => f.startsWith(`${phase}.`)).length < 2) {
    if (work) work();
    else await new Promise((r) => setTimeout(r, 2));
  }
}

/** Machine-wide busy and total jiffies from /proc/stat (undefined if not Linux). */
function machineCpu() {
  try {
    const lines = fsSync.readFileSync('/proc/stat', 'utf8').split('\n');
    const f = lines[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((x, y) => x + y, 0);
    return { busy: total - f[3] - f[4], total, cpus: lines.filter((l) => /^cpu\d/.test(l)).length };
  } catch {
    return undefined;
  }
}

/** CPU seconds per thread of this process (Linux /proc), keyed by 'tid name'. */
function threadCpu() {
  const out = new Map();
  try {
    for (const tid of fsSync.readdirSync('/proc/self/task')) {
      const stat = fsSync.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const name = fsSync.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      out.set(`${tid} ${name}`, (Number(f[11]) + Number(f[12])) / 100); // utime + stime, clock ticks (100/s)
    }
  } catch {
    // not Linux
  }
  return out;
}

/** Cores used during `wallMs`: { main, other, top: [[thread, cores]] } */
function threadCpuDelta(a0, a1, wallMs) {
  const d = [...a1].map(([k, v]) => [k, (v - (a0.get(k) ?? 0)) / (wallMs / 1000)]);
  const main = d.find(([k]) => Number(k.split(' ')[0]) === process.pid)?.[1] ?? 0;
  const total = d.reduce((t, [, v]) => t + v, 0);
  return { main, other: total - main, top: d.filter(([, v]) => v >= 0.02).sort((p, q) => q[1] - p[1]).slice(0, 6) };
}

function median(xs) {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((p, q) => p - q);
  return s[Math.floor(s.length / 2)];
}

// ---------------------------------------------------------------------------------------------
async function driver() {
  const specs = (a.model === 'all' ? ALL : a.model.split(',')).map(spec);
  const nps = a.np.split(',');
  for (const n of nps) if (!/^([1-9][0-9]*|1x2)$/.test(n)) throw new Error(`--np: expected a list of N and/or 1x2, got '${n}'`);
  const repeat = Number(a.repeat);
  const os = await import('node:os');
  const fmt = (cmd) => cmd.map((x) => (/^[\w./=,:-]+$/.test(x) ? x : `'${x}'`)).join(' ');
  const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
  console.log(`$ node ${fmt([self, ...process.argv.slice(2)])}`);
  console.log(
    `# ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()}), node ${process.version}, load average ${load()} at start; ` +
      `optimizer ${a.optimizer}; ${a.warmup} warmup steps excluded; ${repeat} run(s) per row, best shown`,
  );
  const ringrun = join(relative(process.cwd(), root) || '.', 'bin/ringrun.js');
  const command = (sp, n) => {
    const cmd = ['node', ringrun, '-np', String(n), 'node', self, '--worker', '--model', sp.model, '--batch', String(sp.batch)];
    cmd.push('--steps', String(sp.steps), '--warmup', a.warmup, '--optimizer', a.optimizer, '--allreduce-iters', a['allreduce-iters']);
    if (a['no-fast-conv']) cmd.push('--no-fast-conv');
    return cmd;
  };

  // Repeats are interleaved (N=1, N=2, 1x2, N=1, ...) so that a burst of load from other
  // processes hits every configuration alike; each row shows its best run.
  const best = new Map();
  for (const sp of specs) {
    for (let r = 0; r < repeat; r++) {
      for (const n of nps) {
        let res;
        if (n === '1x2') {
          // Two independent single-rank jobs at once: no communication, only the shared cores.
          const dir = fsSync.mkdtempSync(join(os.tmpdir(), 'scaling-sync-'));
          const cmd = [...command(sp, 1), '--sync', dir];
          console.log(`$ ${fmt(cmd)} & ${fmt(cmd)}   # at the same time, timed steps lined up`);
          const [p, q] = await Promise.all([run(cmd), run(cmd)]).finally(() => fsSync.rmSync(dir, { recursive: true, force: true }));
          res = { ...p, n: '1x2', exPerSec: p.exPerSec + q.exPerSec, stepMs: Math.max(p.stepMs, q.stepMs) };
          for (const k of ['computeMs', 'applyMs', 'innerMs', 'commMs']) res[k] = (p[k] + q[k]) / 2;
          res.perRank = [p.perRank[0], q.perRank[0]];
          res.cpu = [p.cpu[0], { ...q.cpu[0], machine: p.cpu[0].machine }];
        } else {
          const cmd = command(sp, n);
          console.log(`$ ${fmt(cmd)}`);
          res = await run(cmd);
        }
        console.log(`#   ${res.exPerSec.toFixed(1)} examples/s, step ${res.stepMs.toFixed(1)} ms, cores ours/others ${cores(res)}`);
        const key = `${sp.model}:${sp.batch}:${n}`;
        if (!best.has(key) || res.exPerSec > best.get(key).exPerSec) best.set(key, res);
      }
    }
  }
  const rows = [...best.values()];

  const main = [['model', 'params', 'batch/rank', 'N', 'examples/s', 'step ms', 'comm ms/step', 'comm share', 'efficiency', 'vs 1x2']];
  const detail = [['model', 'batch/rank', 'N', 'compute ms (per rank)', 'opt ms', 'comm ms', '= wait', '+ rest', 'comm alone', 'allreduce', 'cores ours/others', 'examples/core-s']];
  for (const r of rows) {
    const same = (q) => q.model === r.model && q.batch === r.batch;
    const base = rows.find((q) => same(q) && q.n === 1);
    const ceiling = rows.find((q) => same(q) && q.n === '1x2');
    const ranks = r.n === '1x2' ? 2 : r.n;
    const ring = typeof r.n === 'number' && r.n > 1;
    const n = r.n === '1x2' ? '1x2' : String(r.n);
    const ours = r.cpu.reduce((t, c) => t + c.main + c.other, 0);
    main.push([
      r.model,
      r.params.toLocaleString('en-US'),
      String(r.batch),
      n,
      r.exPerSec.toFixed(1),
      r.stepMs.toFixed(1),
      r.commMs.toFixed(1),
      `${((100 * r.commMs) / r.stepMs).toFixed(1)}%`,
      ranks === 1 ? '(base)' : base ? (r.exPerSec / (ranks * base.exPerSec)).toFixed(3) : '-',
      ring && ranks === 2 && ceiling ? (r.exPerSec / ceiling.exPerSec).toFixed(3) : '-',
    ]);
    detail.push([
      r.model,
      String(r.batch),
      n,
      r.computeMs.toFixed(1) + (ranks > 1 ? ` (${r.perRank.map((p) => p.computeMs.toFixed(0)).join('/')})` : ''),
      r.innerMs.toFixed(1),
      r.commMs.toFixed(1),
      ring ? r.waitMs.toFixed(1) : '-',
      ring ? (r.commMs - r.waitMs).toFixed(1) : '-',
      ring ? r.optCommMs.toFixed(1) : '-',
      ring ? r.allreduceMs.toFixed(1) : '-',
      cores(r),
      (r.exPerSec / ours).toFixed(1),
    ]);
  }
  const print = (table) => {
    const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
    console.log('');
    for (const [i, row] of table.entries()) {
      console.log(row.map((c, j) => (j < 1 ? c.padEnd(widths[j]) : c.padStart(widths[j]))).join('  '));
      if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    }
  };
  print(main);
  console.log(`
examples/s = N x batch x steps / the slowest rank's wall time; step = that time / steps; comm = the time
DistributedOptimizer.applyGradients takes beyond the inner optimizer's own update, mean over ranks and steps;
efficiency = examples/s / (ranks x examples/s at N=1); 1x2 = two independent N=1 jobs at the same time (no
communication at all: only the shared cores), so "vs 1x2" = N=2 / 1x2 isolates what ringreduce costs.`);
  print(detail);
  console.log(`
compute = forward + backward (tf.variableGrads); opt = the inner ${a.optimizer} optimizer's applyGradients (wrapped);
comm = wait + rest, where wait = time waiting for the rank whose local work (step - comm) was longest that step;
comm alone = applyGradients - opt on fixed gradients right after a barrier, allreduce = plain rr.allreduce of the same
number of floats after a barrier (medians, slowest rank); cores = CPU time / wall time during the timed steps, of all
threads of our rank processes / of every other process on this shared machine (/proc/stat); examples/core-s = examples/s
per core our ranks used.
`);
  console.log(`ringreduce kernels: ${rows[0]?.kernels}; load average at end ${load()}`);
}

/** CPU used during the timed steps, in cores: all threads of our ranks / the rest of the machine. */
function cores(r) {
  const ours = r.cpu.reduce((t, c) => t + c.main + c.other, 0);
  const machine = r.cpu[0].machine;
  return `${ours.toFixed(2)}/${Number.isFinite(machine) ? Math.max(0, machine - ours).toFixed(2) : '?'}`;
}

function run(cmd) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0], cmd.slice(1), { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => /RESULT \{/.test(l));
      if (code !== 0 || !line) {
        reject(new Error(`${cmd.join(' ')} exited ${code}\n${out}\n${err}`));
        return;
      }
      resolve(JSON.parse(line.slice(line.indexOf('RESULT ') + 7)));
    });
  });
}
