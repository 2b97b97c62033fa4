import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runNode } from './helpers/run.js';

/** Real ranks, started by the real ringrun binary (built by `npm test`'s pretest step). */
const root = join(import.meta.dirname, '..');
const ringrun = join(root, 'bin', 'ringrun.js');
const worker = join(root, 'test', 'fixtures', 'ring-worker.mjs');

let dirs: string[] = [];
let pidFiles: string[] = [];
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
afterEach(() => {
  // Whatever happened, nothing the test started may survive it.
  for (const f of pidFiles) {
    for (const pid of readPids(f)) if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
  pidFiles = [];
});
const readPids = (f: string) => {
  try {
    return readFileSync(f, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
};

const run = (args: string[], env: Record<string, string>, deadlineMs: number) => runNode([ringrun, ...args], env, deadlineMs);

function pidFile(): string {
  const d = mkdtempSync(join(tmpdir(), 'ringrun-test-'));
  dirs.push(d);
  const f = join(d, 'pids');
  pidFiles.push(f);
  return f;
}

describe('ringrun with real ranks', () => {
  it.each([2, 4])('N=%i: every collective exact on every rank', async (n) => {
    const r = await run(['-np', String(n), 'node', worker], { MODE: 'check' }, 60_000);
    expect(r.code, r.stderr).toBe(0);
    for (let k = 0; k < n; k++) expect(r.stdout).toContain(`[1,${k}]<stdout>:rank ${k}: OK size=${n} local=${k}/${n}`);
    expect(r.stderr).not.toContain('WRONG');
  });

  it('a rank exiting with code 3: peers fail fast with a typed error, ringrun exits non-zero naming it, nothing is left', async () => {
    const pids = pidFile();
    const t0 = Date.now();
    const r = await run(['-np', '4', '--grace', '2', 'node', worker], { MODE: 'die', DIE_RANK: '1', PID_FILE: pids }, 40_000);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/rank 1 \(pid \d+\) exited with code 3/);
    expect(r.stderr).toContain('exiting with code 3 on purpose');
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(readPids(pids)).toHaveLength(4);
    // Give the kernel a moment to reap, then no rank may be alive.
    await new Promise((res) => setTimeout(res, 300));
    expect(readPids(pids).filter(alive)).toEqual([]);
  });
});
