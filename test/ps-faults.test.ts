import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';
import { taggedResults } from './helpers/results.js';

/**
 * Faults of a parameter-server job, in real processes under ringrun:
 *   - a server killed (SIGKILL) mid-training: every worker's step fails with RING_ERR_PEER_LOST
 *     naming the server, nobody hangs, ringrun reports the server and exits non-zero;
 *   - a worker killed in async mode: the others train to the end; ringrun names the lost rank at
 *     the end and exits with its code, or 0 with --allow-worker-loss;
 *   - a worker killed in sync mode: the others' next step fails naming it (no step can complete).
 */
const fixture = join(root, 'test', 'fixtures', 'ps-train.mjs');

interface Result {
  rank: number;
  stats: { updates: number };
}

/** The pid of parameter server `k` among ringrun `parent`'s children (its environment says which). */
function serverPid(parent: number, k: number): number | undefined {
  const lines = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' }).split('\n');
  for (const l of lines) {
    const m = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l);
    if (!m || Number(m[2]) !== parent || !m[3].includes('server-main.js')) continue;
    try {
      if (readFileSync(`/proc/${m[1]}/environ`, 'utf8').split('\0').includes(`RINGREDUCE_PS_SERVER=${k}`)) return Number(m[1]);
    } catch {
      // gone already
    }
  }
  return undefined;
}

describe('parameter-server faults', () => {
  it.each(['sync', 'async'])('%s: a server killed mid-training -> RING_ERR_PEER_LOST naming it on every worker, no hang', async (mode) => {
    const p = spawn(process.execPath, [ringrunBin, '-np', '2', '--servers', '2', 'node', fixture], {
      // Every rank sleeps per step, so that none can finish its 200 steps (20 s) before the kill:
      // in async mode a rank that started early would otherwise train to the end (seen under load).
      env: { ...process.env, PS_MODE: mode, STEPS: '200', BATCH: '2', SLOW_RANK: 'all', SLOW_MS: '100', PRINT_STEPS: '1', MODE: 'async' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let killed = false;
    let killedAt = 0;
    p.stdout.on('data', (d) => {
      stdout += d;
      // Both workers are training: each has done 3 steps.
      if (!killed && stdout.includes('[1,0]<stdout>:STEP 3') && stdout.includes('[1,1]<stdout>:STEP 3')) {
        killed = true;
        killedAt = Date.now();
        const pid = serverPid(p.pid!, 1);
        expect(pid).toBeDefined();
        process.kill(pid!, 'SIGKILL');
      }
    });
    p.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => p.on('exit', resolve));
    expect(killed).toBe(true);
    for (const k of [0, 1]) {
      expect(stdout).toMatch(new RegExp(`\\[1,${k}\\]<stdout>:ERROR RING_ERR_PEER_LOST rank ${k}: parameter server 1 \\(127\\.0\\.0\\.1:\\d+\\) is gone`));
    }
    expect(stderr).toMatch(/ringrun: parameter server 1 \(pid \d+\) was killed by signal SIGKILL/);
    expect(code).toBe(137);
    // Stopped at once: the steps left would take another 15 s or more (200 x 100 ms of sleep).
    expect(Date.now() - killedAt).toBeLessThan(12_000);
  });

  it('async: a worker killed -> the others train to the end; ringrun reports it and exits with its code', async () => {
    const env = { PS_MODE: 'async', STEPS: '10', BATCH: '6', DIE_RANK: '2', DIE_STEP: '3', MODE: 'async' };
    const r = await runNode([ringrunBin, '-np', '3', '--servers', '1', 'node', fixture], env, 60_000);
    const results = taggedResults<Result>(r.stdout, 'WEIGHTS');
    expect(results.map((x) => x.rank)).toEqual([0, 1]);
    for (const x of results) expect(x.stats.updates).toBe(10);
    expect(r.stderr).toMatch(/ringrun: rank 2 \(pid \d+\) was killed by signal SIGKILL; the other ranks go on \(parameter-server job\)/);
    expect(r.stderr).toMatch(/ringrun: lost 1 rank of 3: rank 2 \(signal SIGKILL\) \(--allow-worker-loss would let the job succeed without them\)/);
    expect(r.stderr + r.stdout).toMatch(/parameter server 0: lost rank 2 at step 3: .*; the other workers go on/);
    expect(r.code).toBe(137);

    const allowed = await runNode([ringrunBin, '-np', '3', '--servers', '1', '--allow-worker-loss', 'node', fixture], env, 60_000);
    expect(taggedResults<Result>(allowed.stdout, 'WEIGHTS').map((x) => x.rank)).toEqual([0, 1]);
    expect(allowed.stderr).toMatch(/lost 1 rank of 3: rank 2 \(signal SIGKILL\); --allow-worker-loss: not a failure of the job/);
    expect(allowed.code).toBe(0);
  });

  it('sync: a worker killed -> the others fail naming it', async () => {
    const r = await runNode([ringrunBin, '-np', '3', '--servers', '1', 'node', fixture], { PS_MODE: 'sync', STEPS: '10', BATCH: '6', DIE_RANK: '2', DIE_STEP: '3', MODE: 'async' }, 60_000);
    for (const k of [0, 1]) {
      expect(r.stdout, r.stdout + r.stderr).toMatch(new RegExp(`\\[1,${k}\\]<stdout>:ERROR RING_ERR_PEER_LOST parameter server 0: worker rank 2 was lost before step 3: in sync mode no step completes without every worker's gradients`));
    }
    expect(r.code, r.stdout + r.stderr).toBe(137);
  });

  it('ringrun --help documents --servers and --allow-worker-loss; --allow-worker-loss alone is a usage error', async () => {
    const help = await runNode([ringrunBin, '--help'], {}, 10_000);
    expect(help.stdout).toMatch(/--servers S {11}also start S parameter servers/);
    expect(help.stdout).toMatch(/--allow-worker-loss {3}with --servers/);
    const bad = await runNode([ringrunBin, '-np', '2', '--allow-worker-loss', 'node', '-e', '0'], {}, 10_000);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--allow-worker-loss needs --servers/);
    const zero = await runNode([ringrunBin, '-np', '2', '--servers', '0', 'node', '-e', '0'], {}, 10_000);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/--servers must be a number of parameter servers \(1-1024\), got '0'/);
  });
});
