import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';
import { taggedResults } from './helpers/results.js';

/**
 * async and stale (SSP) modes with a straggler: rank 2 of 3 sleeps SLOW_MS per step.
 *   stale: no worker is ever more than `staleness` steps ahead of the slowest, so the staleness
 *          every update had (recorded by the servers, reported to the worker) is at most the bound
 *          - and the fast workers do run ahead (it is above 0), instead of waiting as in sync.
 *   async: the fast workers never wait: they finish long before the straggler, with staleness
 *          beyond any bound.
 */
const fixture = join(root, 'test', 'fixtures', 'ps-train.mjs');
const STEPS = 16;
const SLOW_MS = 120;

interface Result {
  rank: number;
  ms: number;
  weights: Record<string, number[]>;
  stats: { mode: string; servers: number; updates: number; maxStaleness: number; meanStaleness: number; maxLag: number; meanLag: number };
}

function run(mode: string, extra: Record<string, string> = {}) {
  return runNode([ringrunBin, '-np', '3', '--servers', '2', 'node', fixture], { PS_MODE: mode, STEPS: String(STEPS), BATCH: '6', SLOW_RANK: '2', SLOW_MS: String(SLOW_MS), ...extra }, 120_000);
}

describe('parameter servers with a straggler', () => {
  it.each([1, 3])('stale, staleness %i: recorded max staleness <= the bound, and above 0 on the fast workers', async (bound) => {
    const r = await run('stale', { STALENESS: String(bound) });
    expect(r.code, r.stderr).toBe(0);
    const results = taggedResults<Result>(r.stdout, 'WEIGHTS');
    expect(results).toHaveLength(3);
    for (const res of results) {
      expect(res.stats.mode).toBe('stale');
      expect(res.stats.updates).toBe(STEPS);
      expect(res.stats.maxStaleness, `rank ${res.rank}`).toBeLessThanOrEqual(bound);
    }
    expect(Math.max(results[0].stats.maxStaleness, results[1].stats.maxStaleness)).toBeGreaterThan(0);
    // The servers' own record agrees.
    for (const m of (r.stdout + r.stderr).matchAll(/parameter server \d: (\d+) updates, staleness max (\d+)/g)) {
      expect(Number(m[1])).toBe(3 * STEPS);
      expect(Number(m[2])).toBeLessThanOrEqual(bound);
    }
    // A fast worker waits for the straggler: it cannot end more than `bound` steps before it.
    expect(results[0].ms).toBeGreaterThan((STEPS - bound - 1) * SLOW_MS * 0.9);
  });

  it('async: the fast workers are not held back by the straggler', async () => {
    const r = await run('async');
    expect(r.code, r.stderr).toBe(0);
    const results = taggedResults<Result>(r.stdout, 'WEIGHTS');
    expect(results).toHaveLength(3);
    const slow = results[2];
    expect(slow.ms).toBeGreaterThanOrEqual(STEPS * SLOW_MS);
    for (const fast of results.slice(0, 2)) {
      expect(fast.ms, `rank ${fast.rank} took ${fast.ms} ms, the straggler ${slow.ms} ms`).toBeLessThan(slow.ms / 2);
      expect(fast.stats.updates).toBe(STEPS);
    }
    // The fast workers ran far ahead of the straggler (staleness in steps) ...
    expect(slow.stats.maxStaleness).toBeLessThanOrEqual(1); // it is the slowest (save its first step, perhaps)
    expect(Math.max(results[0].stats.maxStaleness, results[1].stats.maxStaleness)).toBeGreaterThan(3);
    // ... and the straggler's updates were computed on weights that many of their updates had moved since (lag).
    expect(slow.stats.maxLag).toBeGreaterThan(3);
  });
});
