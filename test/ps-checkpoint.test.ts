import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';
import { relErr, taggedResults } from './helpers/results.js';

/**
 * saveServerState / parameterServer.restore: 6 Adam steps in one job against 3 steps, a
 * checkpoint, and a second job that restores it and runs the next 3 batches. Adam's moments and
 * step count live on the servers: unless they are restored too, the resumed run differs.
 * pullServerWeights (here the callback) gives the second job's workers the restored weights before
 * their first step.
 */
const fixture = join(root, 'test', 'fixtures', 'ps-train.mjs');
const dir = mkdtempSync(join(tmpdir(), 'rr-ps-ckpt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Result {
  rank: number;
  weights: Record<string, number[]>;
  stats: { updates: number };
}
const job = (env: Record<string, string>) =>
  runNode([ringrunBin, '-np', '2', '--servers', '2', 'node', fixture], { OPT: 'adam', BATCH: '12', PULL: '1', ...env }, 90_000);

describe('parameter-server checkpoints', () => {
  it.each(['fit', 'async'])('3 steps + save, then restore + 3 steps = 6 steps (through %s)', async (mode) => {
    const straight = await job({ MODE: mode, STEPS: '6' });
    expect(straight.code, straight.stderr).toBe(0);
    const ckpt = join(dir, mode);
    const first = await job({ MODE: mode, STEPS: '3', SAVE_DIR: ckpt });
    expect(first.code, first.stderr).toBe(0);
    expect(readdirSync(ckpt).sort()).toEqual(['ps-server-0.bin', 'ps-server-0.json', 'ps-server-1.bin', 'ps-server-1.json']);
    const resumed = await job({ MODE: mode, STEPS: '3', FIRST_STEP: '3', RESTORE_DIR: ckpt });
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr + resumed.stdout).toMatch(/parameter server 0: restored \d+ chunks at step 3/);
    const [a] = taggedResults<Result>(straight.stdout, 'WEIGHTS');
    const [b] = taggedResults<Result>(resumed.stdout, 'WEIGHTS');
    for (const [name, w] of Object.entries(a.weights)) expect(relErr(b.weights[name], w), name).toBeLessThanOrEqual(1e-6);
    // Not vacuous: the first 3 steps alone end elsewhere.
    const [half] = taggedResults<Result>(first.stdout, 'WEIGHTS');
    expect(relErr(half.weights['out/kernel'], a.weights['out/kernel'])).toBeGreaterThan(1e-3);
  });

  it('a checkpoint of another job shape is refused with a typed error naming it, on every worker', async () => {
    const ckpt = join(dir, 'fit');
    const r = await runNode([ringrunBin, '-np', '2', '--servers', '1', 'node', fixture], { OPT: 'adam', STEPS: '2', PULL: '1', RESTORE_DIR: ckpt }, 60_000);
    for (const k of [0, 1]) expect(r.stdout).toMatch(new RegExp(`\\[1,${k}\\]<stdout>:ERROR RING_ERR_MISMATCH parameter server 0: checkpoint .*ps-server-0.json: it was saved by a job of 2 servers, this job has 1`));
  });
});
