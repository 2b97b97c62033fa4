import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';

/**
 * A project of the user's own with its own copy of tfjs (hard links: a second physical copy for
 * Node's module cache, made in no time) and ringreduce installed as a symlink, as
 * `npm install ../ringreduce` does. Before: `TypeError: Cannot read properties of undefined
 * (reading 'weights')` from inside the callbacks.
 */
let dir: string;
let app: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rr-tfjs-copy-'));
  app = join(dir, 'app');
  mkdirSync(join(app, 'node_modules'), { recursive: true });
  for (const pkg of ['@tensorflow', 'seedrandom', 'long']) {
    const from = join(root, 'node_modules', pkg);
    try {
      execFileSync('cp', ['-al', from, join(app, 'node_modules')], { stdio: 'ignore' });
    } catch {
      execFileSync('cp', ['-r', from, join(app, 'node_modules')]); // another filesystem: a real copy
    }
  }
  symlinkSync(root, join(app, 'node_modules', 'ringreduce'));
  writeFileSync(join(app, 'package.json'), '{ "type": "module" }\n');
  copyFileSync(join(root, 'examples', 'quickstart.js'), join(app, 'quickstart.js'));
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('ringreduce installed as a symlink in a project with its own tfjs: the project\'s copy is used, and the quick start trains', async () => {
  const r = await runNode([ringrunBin, '-np', '2', 'node', join(app, 'quickstart.js')], {}, 120_000);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout.split('\n').filter((l) => l.includes('final loss'))).toHaveLength(2);
}, 150_000);

it('objects from a tfjs copy ringreduce cannot see: RING_ERR_TFJS_COPY naming the copy it loaded and the fix, from the callbacks (an optimizer of another copy works)', async () => {
  // A script outside any project: it loads the app's tfjs by path; ringreduce can only find its own.
  const script = join(dir, 'foreign.mjs');
  writeFileSync(
    script,
    `import { createRequire } from 'node:module';
const tf = createRequire(${JSON.stringify(join(app, 'x.js'))})('@tensorflow/tfjs');
import * as rr from ${JSON.stringify(join(root, 'dist', 'index.js'))};
const codes = [];
// An optimizer of another copy is fine (tf.Optimizer's instanceof checks for the methods).
new rr.DistributedOptimizer(tf.train.sgd(0.1));
const model = tf.sequential({ layers: [tf.layers.dense({ units: 1, inputShape: [1] })] });
model.compile({ optimizer: 'sgd', loss: 'meanSquaredError' });
try {
  await model.fit(tf.ones([4, 1]), tf.ones([4, 1]), { epochs: 1, verbose: 0, callbacks: [rr.callbacks.broadcastGlobalVariables(0)] });
} catch (e) { codes.push(e.code); console.log(e.message); }
console.log('codes ' + codes.join(','));
`,
  );
  const r = await runNode([script], {}, 60_000);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toContain('codes RING_ERR_TFJS_COPY');
  expect(r.stdout).toMatch(new RegExp(`@tensorflow/tfjs-core \\d+\\.\\d+\\.\\d+ at ${join(root, 'node_modules', '@tensorflow', 'tfjs-core')}`));
  expect(r.stdout).toContain('npm pack');
}, 90_000);
