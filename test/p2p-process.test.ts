import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from './helpers/procs.js';
import { ringrunBin, root, runNode } from './helpers/run.js';

/**
 * A rank killed (SIGKILL) while other ranks have sends and recvs pending with it, including ranks
 * that never opened a link to it: the world ring sees it go, and every pending point-to-point
 * operation fails with RING_ERR_PEER_LOST naming it — long before the 60 s operation timeout.
 */
describe('point-to-point with a killed peer (real processes)', () => {
  it('every pending send and recv fails with RING_ERR_PEER_LOST naming the killed rank', async () => {
    const n = 4;
    const kill = 2;
    const port = await freePort();
    const events: Array<Record<string, any>> = [];
    const procs = Array.from({ length: n }, (_, r) =>
      spawn(process.execPath, [join(root, 'test', 'fixtures', 'p2p-rank.mjs')], {
        env: {
          ...process.env,
          RANK: String(r),
          WORLD_SIZE: String(n),
          MASTER_ADDR: '127.0.0.1',
          MASTER_PORT: String(port),
          RINGREDUCE_TOKEN: 'p2p-kill-test',
          RINGREDUCE_TIMEOUT: '60',
          KILL_RANK: String(kill),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    const exited = procs.map(
      (p) =>
        new Promise<void>((resolve) => {
          let buf = '';
          p.stdout!.on('data', (d) => {
            buf += d;
            let i;
            while ((i = buf.indexOf('\n')) >= 0) {
              events.push(JSON.parse(buf.slice(0, i)));
              buf = buf.slice(i + 1);
            }
          });
          p.on('exit', () => resolve());
        }),
    );
    const t0 = Date.now();
    try {
      await Promise.race([Promise.all(exited), new Promise((_, rej) => setTimeout(() => rej(new Error(`hang: ${JSON.stringify(events)}`)), 40_000))]);
    } finally {
      for (const p of procs) p.kill('SIGKILL');
    }
    expect(Date.now() - t0).toBeLessThan(40_000);
    const errs = events.filter((e) => e.ev === 'error');
    expect(events.filter((e) => e.ev === 'ok')).toEqual([]);
    for (const r of [0, 1, 3]) {
      for (const op of ['send-to-killed', 'recv-from-killed', 'recv-from-live']) {
        const e = errs.find((x) => x.rank === r && x.op === op);
        expect(e, `rank ${r} ${op}`).toBeDefined();
        expect(e!.code, `${r} ${op}: ${e!.message}`).toBe('RING_ERR_PEER_LOST');
        expect(e!.ranks).toContain(kill);
        expect(e!.message).toMatch(/rank 2/);
      }
    }
  }, 60_000);
});

describe('examples/p2p.js under ringrun', () => {
  it('a ring shift, an uneven all-to-all and two concurrent groups, every value right (N=3 and N=4)', async () => {
    for (const n of [3, 4]) {
      const run = await runNode([ringrunBin, '-np', String(n), 'node', join(root, 'examples', 'p2p.js')], {}, 60_000);
      expect(run.code, run.stderr).toBe(0);
      const lines = run.stdout.split('\n').filter((l) => l.includes('wrong'));
      expect(lines).toHaveLength(n);
      for (const l of lines) expect(l).toMatch(/; 0 wrong$/);
    }
  }, 150_000);
});
