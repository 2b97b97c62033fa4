import { afterEach, describe, expect, it } from 'vitest';
import { faultRank, gone, killStarted, Proc, ringrun, sleep, type RankEvent } from './helpers/procs.js';

/**
 * The direct route for small operations with real processes (test/fixtures/fault-rank.mjs under
 * ringrun, RINGREDUCE_SMALL_OPS=direct, 4-byte all-reduces): a job runs to the end and every
 * process exits (no direct link keeps one alive); a rank killed while the others run small
 * all-reduces is named by every survivor as RING_ERR_PEER_LOST. Every wait has a deadline.
 */

afterEach(killStarted);

const job = (np: number, env: Record<string, string>) =>
  new Proc(process.execPath, [ringrun, '-np', String(np), '--grace', '5', 'node', faultRank], { RINGREDUCE_SMALL_OPS: 'direct', ELEMS: '1', ...env }, `ringrun -np ${np}`);

describe('direct route, real processes', () => {
  it('5 ranks run 300 small all-reduces exactly and exit 0: nothing is left', async () => {
    const p = job(5, { OPS: '300', RINGREDUCE_VERBOSE: '1' });
    try {
      const exit = await p.waitFor(() => p.exit, 60_000, 'ringrun exits');
      expect(exit.code, p.stderr).toBe(0);
      expect(p.of('finished')).toHaveLength(5);
      expect(p.of('wrong')).toEqual([]);
      expect(p.stderr).toMatch(/small operations go over direct links \(RINGREDUCE_SMALL_OPS=direct, 5 ranks on 1 host\)/);
      expect(await gone(p.pids(), 3_000)).toEqual([]);
    } finally {
      p.kill();
    }
  });

  it('a rank of 4 killed (-9) among small all-reduces: every survivor fails with RING_ERR_PEER_LOST naming it', async () => {
    const p = job(4, { TRAP_SIGTERM: '1', EXIT_DELAY_MS: '0' });
    try {
      await p.waitFor(() => [0, 1, 2, 3].every((r) => p.of('done').filter((e) => e.rank === r).length >= 50), 50_000, '50 all-reduces each');
      const victim = p.of('ready').find((e) => e.rank === 2)!.pid!;
      const killedAt = Date.now();
      process.kill(victim, 'SIGKILL');
      const errs = await p.waitFor(
        () => {
          const e = [0, 1, 3].map((r) => p.of('error').find((x) => x.rank === r));
          return e.every(Boolean) && (e as RankEvent[]);
        },
        10_000,
        'an error from every survivor',
      );
      for (const e of errs) {
        console.log(`[small-ops] kill -9 rank 2 of 4: rank ${e.rank} after ${e.at! - killedAt} ms: ${e.code}: ${e.message}`);
        expect(e.code, e.message).toBe('RING_ERR_PEER_LOST');
        expect(e.details!.ranks).toEqual([2]);
        expect(e.message).toMatch(/rank 2 \((left neighbour|right neighbour|direct link)\) (is gone|cannot be reached)/);
      }
      expect(p.of('wrong')).toEqual([]);
      await p.waitFor(() => p.exit, 10_000, 'ringrun exits');
      await sleep(100);
    } finally {
      p.kill();
    }
  });
});
