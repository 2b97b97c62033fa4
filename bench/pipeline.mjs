#!/usr/bin/env node
// Pipeline parallelism against one process and against data parallelism, on the same MLP and the
// same global batch: examples/s for 1 process (model.fit), 2 data-parallel ranks
// (DistributedOptimizer, half the batch each) and 2 pipeline stages at each number of
// micro-batches M, with each stage's measured idle fraction (its time waiting for the other stage
// over the wall time, from pipe.stats()) against the bubble of a balanced pipeline, (S-1)/(M+S-1).
//
//   node bench/pipeline.mjs [--micro 1,2,4,8,16] [--batch 128] [--steps 20] ...
//   node bench/pipeline.mjs --help
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const USAGE = `Usage: node bench/pipeline.mjs [options]

Examples/s of one MLP trained by 1 process, by 2 data-parallel ranks and by a pipeline of 2
stages at each number of micro-batches, with each stage's measured idle fraction against the
theoretical bubble (S-1)/(M+S-1). Ranks start through ringrun (-np 2).

Options:
  --micro LIST     micro-batches per step for the pipeline rows (default 1,2,4,8,16)
  --batch N        global batch per step, for every row (default 512; a multiple of each M and of 2)
  --steps N        timed steps per row (default 6)
  --warmup N       untimed steps first (default 2)
  --width N        hidden units per layer (default 96)
  --input N        input features (default: the width, so that every layer but the output one
                   costs the same and a cut can balance the stages; 784 is MNIST's)
  --layers N       dense layers, the last with 10 outputs (default 97: moving a cut by one
                   layer moves ~2% of a stage's work, so a cut can balance the stages to within
                   the bubble's margin at M=8; with 49 it moved ~4%, and the faster stage idled
                   up to half of that more than the bubble)
  --schedule S     1f1b (default) or gpipe
  --stages CUTS    the pipeline's cut point (default: 'auto', measured)
  --json FILE      also write the settings and rows as JSON
  -h, --help       this text`;

const { values: a } = parseArgs({
  options: {
    micro: { type: 'string', default: '1,2,4,8,16' },
    batch: { type: 'string', default: '512' },
    steps: { type: 'string', default: '6' },
    warmup: { type: 'string', default: '2' },
    width: { type: 'string', default: '96' },
    layers: { type: 'string', default: '97' },
    input: { type: 'string' },
    schedule: { type: 'string', default: '1f1b' },
    stages: { type: 'string', default: 'auto' },
    json: { type: 'string' },
    worker: { type: 'string' }, // internal: single | dp | pipe
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (a.help) {
  console.log(USAGE);
  process.exit(0);
}
const int = (name) => {
  const v = Number(a[name]);
  if (!Number.isSafeInteger(v) || v < 1) {
    console.error(`bench/pipeline.mjs: --${name} must be an integer >= 1, got '${a[name]}'\n\n${USAGE}`);
    process.exit(2);
  }
  return v;
};
const batch = int('batch');
const steps = int('steps');
const warmup = int('warmup');
const width = int('width');
const layers = int('layers');
if (a.input === undefined) a.input = a.width;
const input = int('input');
const micros = a.micro.split(',').map(Number);
if (!['1f1b', 'gpipe'].includes(a.schedule)) {
  console.error(`bench/pipeline.mjs: --schedule must be 1f1b or gpipe\n\n${USAGE}`);
  process.exit(2);
}
for (const m of micros) {
  if (!Number.isSafeInteger(m) || m < 1 || batch % m !== 0) {
    console.error(`bench/pipeline.mjs: --micro: each must be an integer >= 1 dividing --batch ${batch}, got '${m}'`);
    process.exit(2);
  }
}

if (a.worker) await worker(a.worker);
else main();

function main() {
  const rows = [];
  const run = (label, np, worker, extra = []) => {
    const args = ['--worker', worker, '--batch', String(batch), '--steps', String(steps), '--warmup', String(warmup), '--width', String(width), '--input', String(input), '--layers', String(layers), '--schedule', a.schedule, '--stages', a.stages, ...extra];
    const cmd = np === 1 ? [process.execPath, [join(here, 'pipeline.mjs'), ...args]] : [process.execPath, [join(root, 'bin', 'ringrun.js'), '-np', String(np), 'node', join(here, 'pipeline.mjs'), ...args]];
    const r = spawnSync(cmd[0], cmd[1], { encoding: 'utf8', timeout: 600_000, env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' } });
    const found = (r.stdout ?? '').split('\n').filter((l) => l.includes('BENCH ')).map((l) => JSON.parse(l.slice(l.indexOf('BENCH ') + 6)));
    if (r.status !== 0 || found.length === 0) {
      console.error(`bench/pipeline.mjs: ${label} failed (status ${r.status}):\n${r.stdout}\n${r.stderr}`);
      process.exit(1);
    }
    const cut = /ringreduce: pipeline of \d+ stage\(s\), \S+, \d+ micro-batches, cut \[([\d, ]*)\]/.exec(r.stdout ?? '')?.[1];
    const row = { label, ...found.find((f) => f.rate !== undefined), stages: found.filter((f) => f.idle !== undefined).sort((x, y) => x.stage - y.stage), ...(cut !== undefined ? { cut } : {}) };
    rows.push(row);
    printRow(row);
  };
  console.log(`# bench/pipeline.mjs: MLP ${input}-${Array(layers - 1).fill(width).join('-')}-10, global batch ${batch}, ${steps} timed steps after ${warmup}, ${a.schedule}, stages ${a.stages}`);
  console.log(`# ${'row'.padEnd(26)} ${'examples/s'.padStart(10)}  ${'idle stage 0 / 1'.padStart(17)}  ${'theory'.padStart(6)}  ${'ratio'.padStart(5)}`);
  run('1 process', 1, 'single');
  run('2 data-parallel ranks', 2, 'dp');
  for (const m of micros) run(`2 stages, M=${m}`, 2, 'pipe', ['--micro', String(m)]);
  if (a.json) writeFileSync(a.json, JSON.stringify({ settings: { batch, steps, warmup, width, input, layers, schedule: a.schedule, stages: a.stages, micros }, rows }, null, 2));
}

function printRow(row) {
  let idle = '';
  let theory = '';
  let ratio = '';
  if (row.stages.length) {
    idle = row.stages.map((s) => s.idle.toFixed(3)).join(' / ');
    const t = (row.stages.length - 1) / (row.micro + row.stages.length - 1);
    theory = t.toFixed(3);
    ratio = (Math.max(...row.stages.map((s) => s.idle)) / t).toFixed(2);
  }
  console.log(`  ${row.label.padEnd(26)} ${row.rate.toFixed(0).padStart(10)}  ${idle.padStart(17)}  ${theory.padStart(6)}  ${ratio.padStart(5)}${row.cut !== undefined ? `  cut [${row.cut}]` : ''}`);
}

async function worker(kind) {
  const tf = await import('@tensorflow/tfjs');
  const rr = await import('ringreduce');
  await rr.init();
  tf.enableProdMode();
  await tf.setBackend('cpu');
  const n = rr.size();
  const build = () => {
    const m = tf.sequential();
    for (let l = 0; l < layers; l++) {
      const last = l === layers - 1;
      m.add(tf.layers.dense({ units: last ? 10 : width, activation: last ? 'softmax' : 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: l + 1 }), ...(l === 0 ? { inputShape: [input] } : {}) }));
    }
    return m;
  };
  const total = (warmup + steps) * batch;
  const per = kind === 'dp' ? batch / n : batch;
  const rows = kind === 'dp' ? total / n : total;
  const xs = tf.randomUniform([rows, input], 0, 1, 'float32', 1);
  const ys = tf.oneHot(tf.randomUniform([rows], 0, 10, 'int32', 2), 10).toFloat();
  const model = build();
  let t0 = 0;
  let mark;
  let pipe;
  const timer = new tf.CustomCallback({
    onBatchEnd: async (b) => {
      if (b === warmup - 1) {
        t0 = performance.now();
        mark = pipe?.stats();
      }
    },
  });
  if (kind === 'pipe') {
    const micro = Number(a.micro);
    pipe = rr.pipeline(model, { stages: a.stages === 'auto' ? 'auto' : a.stages.split(',').map(Number), microBatches: micro, schedule: a.schedule, optimizer: tf.train.sgd(0.01), loss: 'categoricalCrossentropy' });
    await pipe.fit(xs, ys, { batchSize: per, epochs: 1, shuffle: false, verbose: 0, callbacks: [timer] });
    const sec = (performance.now() - t0) / 1000;
    const end = pipe.stats();
    // Idle: the part of the wall time this stage waited for the others, in its schedule's
    // receives and in the step's closing exchange (the last stage's loss). The wall time, not the
    // schedules' own time: a stage that finishes early waits at the step's end, not in it.
    const waited = end.waitMs + end.syncMs - (mark.waitMs + mark.syncMs);
    const idle = waited / (sec * 1000);
    const each = (k) => (end[k] - mark[k]) / steps;
    const parts = { stepMs: each('stepMs'), waitMs: each('waitMs'), syncMs: each('syncMs'), wallMs: (sec * 1000) / steps };
    console.log(`BENCH ${JSON.stringify({ stage: end.stage, idle, micro, parts, ...(rr.rank() === 0 ? { rate: (steps * batch) / sec } : {}) })}`);
  } else {
    const opt = kind === 'dp' ? new rr.DistributedOptimizer(tf.train.sgd(0.01)) : tf.train.sgd(0.01);
    model.compile({ optimizer: opt, loss: 'categoricalCrossentropy' });
    await model.fit(xs, ys, { batchSize: per, epochs: 1, shuffle: false, verbose: 0, callbacks: [timer] });
    const sec = (performance.now() - t0) / 1000;
    if (rr.rank() === 0) console.log(`BENCH ${JSON.stringify({ rate: (steps * batch) / sec })}`);
  }
  await rr.shutdown();
}
