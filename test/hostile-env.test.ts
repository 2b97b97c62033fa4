import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hideToken } from '../src/env.js';
import { resolveOptions } from '../src/options.js';
import { freePort, killAll, killStarted, Proc, ringrun, type RankEvent } from './helpers/procs.js';
import { root } from './helpers/run.js';

/**
 * Issue 14, row 13 (and the comm thread under `node -e`): the job token is a secret, so once init()
 * has it, it leaves process.env, and the user's child processes do not inherit it; the comm thread
 * and a later init() still have it (in memory). Real ranks, started by ringrun and by hand.
 */

afterEach(killStarted);

const fixture = join(root, 'test', 'fixtures', 'token-rank.mjs');
type Check = RankEvent & { round: number; tokenInEnv: string[]; childSees: boolean; allreduce: boolean; engine: boolean };

function expectClean(checks: Check[], n: number, rounds: number) {
  expect(checks.length).toBe(n * rounds);
  for (const c of checks) {
    expect(c.tokenInEnv, `rank ${c.rank} round ${c.round}`).toEqual([]);
    expect(c.childSees, `rank ${c.rank}: a child process sees the token`).toBe(false);
    expect(c.allreduce, `rank ${c.rank}: all-reduce`).toBe(true);
    expect(c.engine, `rank ${c.rank}: comm thread`).toBe(true);
  }
}

describe('row 13: the job token leaves the environment at init()', () => {
  it('under ringrun (RINGRUN_TOKEN): not in process.env nor a child\'s; the comm thread works', async () => {
    const job = new Proc(process.execPath, [ringrun, '-np', '2', process.execPath, fixture], {}, 'ringrun');
    try {
      const exit = await job.waitFor(() => job.exit, 60_000, 'the job ends');
      expect(exit.code, job.stderr).toBe(0);
      expectClean(job.events as Check[], 2, 1);
    } finally {
      job.kill();
    }
  });

  it('by hand (RINGREDUCE_TOKEN): the same, and a second init() after shutdown() still has the token', async () => {
    const port = await freePort();
    let port2 = await freePort();
    while (port2 === port) port2 = await freePort();
    const ranks = [0, 1].map(
      (r) =>
        new Proc(
          process.execPath,
          [fixture],
          { RANK: String(r), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RINGREDUCE_TOKEN: 'hostile-env-token', REINIT: '1', REINIT_PORT: String(port2) },
          `rank ${r}`,
        ),
    );
    try {
      for (const p of ranks) {
        const exit = await p.waitFor(() => p.exit, 60_000, `${p.label} ends`);
        expect(exit.code, p.stderr).toBe(0);
      }
      expectClean(ranks.flatMap((p) => p.events) as Check[], 2, 2);
    } finally {
      killAll(ranks);
    }
  });

  it('hideToken keeps the token for resolveOptions, out of process.env', () => {
    const saved = { RINGREDUCE_TOKEN: process.env.RINGREDUCE_TOKEN, RINGRUN_TOKEN: process.env.RINGRUN_TOKEN };
    try {
      delete process.env.RINGRUN_TOKEN;
      process.env.RINGREDUCE_TOKEN = 'kept-in-memory';
      hideToken();
      expect(process.env.RINGREDUCE_TOKEN).toBeUndefined();
      expect(resolveOptions({}).token).toBe('kept-in-memory');
      // A token set again later wins over the one kept.
      process.env.RINGREDUCE_TOKEN = 'newer';
      expect(resolveOptions({}).token).toBe('newer');
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe('the comm thread under `node --input-type=module -e`', () => {
  // --expose-gc: an option Node refuses in a worker's execArgv (the comm thread must not be given one).
  it.each(['', '--expose-gc '])('ringrun -np 2 node %s--input-type=module -e \'...\': init() and the comm thread work', async (flag) => {
    const code = `
      import * as rr from ${JSON.stringify(join(root, 'dist', 'index.js'))};
      import { engine } from ${JSON.stringify(join(root, 'dist', 'api.js'))};
      await rr.init();
      const [z] = await engine('t').reduce([{ name: 'g', shape: [1], data: new Float32Array([rr.rank() + 1]) }], { op: 'sum', compression: 'none', prescale: 1, postscale: 1 });
      console.log(JSON.stringify({ ev: 'done', rank: rr.rank(), ok: z[0] === 3 }));
      await rr.shutdown();`;
    const job = new Proc(process.execPath, [ringrun, '-np', '2', process.execPath, ...flag.split(' ').filter(Boolean), '--input-type=module', '-e', code], {}, 'ringrun -e');
    try {
      const exit = await job.waitFor(() => job.exit, 60_000, 'the job ends');
      expect(exit.code, job.stderr).toBe(0);
      expect(job.of('done').map((e) => (e as unknown as { ok: boolean }).ok)).toEqual([true, true]);
    } finally {
      job.kill();
    }
  });
});
