import { cpus } from 'node:os';
import { describe, expect, it } from 'vitest';
import { allowedCpus, boundCommand, cpuSlice, parseCpuList } from '../src/launcher/bind.js';
import { ringrunBin, runNode } from './helpers/run.js';

/** ringrun --bind-to (src/launcher/bind.ts): each host's ranks on disjoint shares of its CPUs. */

describe('CPU slices', () => {
  it('parses Cpus_allowed_list and refuses nonsense', () => {
    expect(parseCpuList('0')).toEqual([0]);
    expect(parseCpuList('0-3,8,10-11')).toEqual([0, 1, 2, 3, 8, 10, 11]);
    expect(parseCpuList('3-1')).toBeUndefined();
    expect(parseCpuList('a')).toBeUndefined();
    expect(allowedCpus()?.length).toBeGreaterThan(0);
  });

  it('gives equal disjoint slices, and none when there are more ranks than CPUs', () => {
    const c = [0, 1, 2, 3, 4, 5, 6, 7];
    expect([0, 1, 2].map((r) => cpuSlice(c, r, 3))).toEqual([[0, 1], [2, 3], [4, 5]]);
    expect(cpuSlice(c, 1, 2)).toEqual([4, 5, 6, 7]);
    expect(cpuSlice([0, 1], 1, 2)).toEqual([1]);
    expect(cpuSlice([0, 1], 3, 4)).toBeUndefined();
  });

  it('wraps the command in taskset only when it can bind and the command exists', () => {
    const b = boundCommand('slice', process.execPath, ['x.js'], 1, 2, { cpus: [0, 1] });
    expect(b.cpus).toEqual([1]);
    expect(b.args.slice(0, 4)).toEqual(['-c', '1', process.execPath, 'x.js']);
    expect(boundCommand('none', 'node', ['x.js'], 0, 2, { cpus: [0, 1] })).toMatchObject({ command: 'node', args: ['x.js'], why: '--bind-to none' });
    expect(boundCommand('slice', 'node', [], 0, 4, { cpus: [0, 1] }).why).toBe('4 ranks on this host but only 2 CPUs');
    // A missing command still fails as itself (spawn's ENOENT), not as taskset's exit status.
    expect(boundCommand('slice', 'no-such-command-xyz', [], 0, 1, { cpus: [0, 1], path: process.env.PATH })).toMatchObject({ command: 'no-such-command-xyz' });
  });
});

const affinity = `const m = /Cpus_allowed_list:\\s*(\\S+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8')); console.log('rank ' + process.env.RANK + ' cpus ' + m[1]);`;

describe('ringrun --bind-to', () => {
  const n = cpus().length;
  it.skipIf(n < 2 || !allowedCpus())('binds each local rank to its own slice by default, and not with --bind-to none', async () => {
    const all = allowedCpus()!;
    const bound = await runNode([ringrunBin, '--verbose', '-np', '2', 'node', '-e', affinity], {}, 30_000);
    expect(bound.code, bound.stderr).toBe(0);
    const share = Math.floor(all.length / 2);
    for (const r of [0, 1]) {
      const slice = all.slice(r * share, (r + 1) * share);
      expect(bound.stderr).toContain(`rank ${r}: bound to CPUs ${slice.join(',')}`);
      const got = new RegExp(`rank ${r} cpus (\\S+)`).exec(bound.stdout)![1];
      expect(parseCpuList(got)).toEqual(slice);
    }
    const free = await runNode([ringrunBin, '--verbose', '--bind-to', 'none', '-np', '2', 'node', '-e', affinity], {}, 30_000);
    expect(free.code, free.stderr).toBe(0);
    expect(free.stderr).toContain('rank 0: not bound (--bind-to none)');
    for (const r of [0, 1]) expect(parseCpuList(new RegExp(`rank ${r} cpus (\\S+)`).exec(free.stdout)![1])).toEqual(all);
  });

  it('refuses an unknown binding, naming the option', async () => {
    const r = await runNode([ringrunBin, '--bind-to', 'socket', '-np', '2', 'true'], {}, 20_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--bind-to must be one of slice, none, got 'socket'");
  });
});
