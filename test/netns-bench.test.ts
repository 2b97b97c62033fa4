import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root, runNode } from './helpers/run.js';

/**
 * bench/netns.mjs: two emulated hosts (network namespaces on a bridge), bench/compare.mjs across
 * them at two tiny sizes, the table with ringreduce's numbers, and no namespace left afterwards —
 * also when it is interrupted. Gloo and Open MPI run too where installed (compare.mjs notes skips).
 * Needs root and `ip netns`; skipped saying why otherwise.
 */

const netns = join(root, 'bench', 'netns.mjs');

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const probe = `rrnb-${process.pid}-testprobe`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.error) return `cannot run 'ip': ${r.error.message}`;
  if (r.status !== 0) return `'ip netns add' is not permitted here: ${r.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return undefined;
}
const skip = skipReason();
if (skip) console.warn(`test/netns-bench.test.ts skipped: ${skip}`);

/** The namespaces of the netns.mjs run with this pid that still exist. */
const left = (pid: string) =>
  (spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((ns) => ns.startsWith(`rrnb-${pid}-`));

describe.skipIf(skip !== undefined)(`bench/netns.mjs${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('2 emulated hosts, 4 B and 64 KiB: the table has ringreduce numbers, the JSON its rows, and the namespaces are gone', async () => {
    if (!existsSync(join(root, 'dist', 'launcher', 'bench', 'worker.js'))) throw new Error('build first: npm run build');
    const dir = mkdtempSync(join(tmpdir(), 'rr-netns-bench-'));
    try {
      const json = join(dir, 'rows.json');
      const r = await runNode([netns, '--hosts', '2', '--sizes', '4,64K', '--small-iters', '50', '--iters', '3', '--warmup', '1', '--json', json], {}, 50_000);
      const show = `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
      if (process.env.RR_SHOW_OUTPUT) console.log(show);
      expect(r.code, show).toBe(0);
      const pid = /rrnb-(\d+)-h1/.exec(r.stdout)?.[1];
      expect(pid, show).toBeDefined();
      expect(r.stdout).toMatch(/# 2 emulated hosts x 1 rank \(N=2\): network namespaces rrnb-\d+-h1, rrnb-\d+-h2 on a bridge/);
      expect(r.stdout).toMatch(/# across hosts: 10\.\d+\.\d+\.1, 10\.\d+\.\d+\.2 \(1 rank each\) via '.*rsh-netns\.sh', interface rrnb0/);
      // ringreduce with its defaults: between hosts its links take the bridge by themselves (host key).
      expect(r.stdout).not.toContain('RINGREDUCE_SHM=0');
      const header = r.stdout.split('\n').find((l) => l.startsWith('#  N '));
      expect(header, show).toMatch(/time us: +rr-none +rr-fp16 +gloo +mpi-tcp \|/);
      // The rr-none column (first time) holds a number on both rows.
      for (const size of ['4 B', '64 KiB']) {
        const row = r.stdout.split('\n').find((l) => new RegExp(`^ +2 +${size} \\|`).test(l));
        expect(row, `row ${size}\n${show}`).toBeDefined();
        const rrNone = Number(row!.split('|')[1].trim().split(/\s+/)[0]);
        expect(rrNone, row).toBeGreaterThan(0);
      }
      const rows = JSON.parse(readFileSync(json, 'utf8')) as { series: string; n: number; bytes: number; timeUs: number }[];
      expect(rows.filter((x) => x.series === 'rr-none').map((x) => [x.n, x.bytes])).toEqual([
        [2, 4],
        [2, 65536],
      ]);
      expect(left(pid!)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('interrupted (SIGINT) while measuring: it stops and removes its namespaces', async () => {
    const child = spawn(process.execPath, [netns, '--hosts', '2', '--sizes', '64M', '--iters', '50'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 20_000;
      while (!stdout.includes('#  N ') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(stdout, stderr).toContain('#  N ');
      const pid = /rrnb-(\d+)-h1/.exec(stdout)![1];
      expect(left(pid)).toHaveLength(3); // h1, h2 and the hub, while it runs
      child.kill('SIGINT');
      expect(await closed).toBe(130);
      expect(stderr).toContain('netns: SIGINT: stopping and removing the namespaces');
      expect(left(pid)).toEqual([]);
    } finally {
      child.kill('SIGKILL');
    }
  }, 40_000);
});
