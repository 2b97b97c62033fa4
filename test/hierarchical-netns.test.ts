import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { emulatedHosts, netnsSkipReason, type EmulatedHosts } from './helpers/netns-hosts.js';
import { ringrunBin, root, runToEnd, type Run } from './helpers/run.js';

/**
 * The hierarchical all-reduce across emulated hosts, with real processes: three network namespaces
 * (rr8-<tag>h1..h3, see helpers/netns-hosts.ts), ringrun started inside the first with --iface, the
 * ranks of the others through test/fixtures/rsh-netns.sh (RSH_NETNS_PREFIX=rr8-...). Each rank
 * (test/fixtures/hier-rank.mjs) checks its results exactly and prints their sha256, which must be
 * the same on every rank. Needs root; skipped with the reason otherwise; everything is removed in
 * afterAll.
 */

const tag = String(process.pid % 250);
const PREFIX = `rr8-${tag}`;
const skip = netnsSkipReason(PREFIX);
if (skip) console.warn(`test/hierarchical-netns.test.ts skipped: ${skip}`);
const rsh = join(root, 'test', 'fixtures', 'rsh-netns.sh');
const rank = join(root, 'test', 'fixtures', 'hier-rank.mjs');
const RUN_DEADLINE_MS = 90_000;

let hosts: EmulatedHosts;
const children = new Set<ChildProcess>();

const show = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;

/** ringrun inside host 1 with `slots[i]` ranks on host i. */
function ringrun(slots: number[], extra: string[] = []): Promise<Run> {
  const list = slots.map((k, i) => `${hosts.addr(i)}:${k}`).join(',');
  const argv = ['netns', 'exec', hosts.ns(0), process.execPath, ringrunBin, '--iface', hosts.iface, '-H', list, '--rsh', rsh, '--start-timeout', '60', ...extra, 'node', rank];
  return runToEnd('ip', argv, { cwd: root, env: { ...process.env, RSH_NETNS_PREFIX: PREFIX }, deadlineMs: RUN_DEADLINE_MS, started: children });
}

/**
 * Every result line ("<op> <count>: ... sha X") of every rank: exact (0 wrong, or fp16 within
 * `fp16Tolerance`) and the same sha on all `n` ranks. Returns how many kinds of result were seen.
 */
function expectResults(r: Run, n: number, fp16Tolerance = 0.5): number {
  const byWhat = new Map<string, Set<string>>();
  for (const line of r.stdout.split('\n')) {
    const m = /^\[1,(\d+)\]<stdout>:rank \d+: (\w+ \d+): (.*), sha ([0-9a-f]+)$/.exec(line);
    if (!m) continue;
    const [, , what, result, sha] = m;
    if (what.startsWith('fp16')) {
      const err = Number(/max error (\S+)/.exec(result)![1]);
      expect(err, `${line}\n${show(r)}`).toBeLessThanOrEqual(fp16Tolerance);
    } else expect(result, line).toBe('0 wrong');
    byWhat.set(what, (byWhat.get(what) ?? new Set()).add(sha));
  }
  for (const [what, shas] of byWhat) expect(shas.size, `${what}: results differ between ranks`).toBe(1);
  const lines = r.stdout.split('\n').filter((l) => / sha /.test(l)).length;
  expect(lines, show(r)).toBe(n * byWhat.size);
  return byWhat.size;
}

const saidHierarchical = (r: Run, layout: string) =>
  expect(r.stderr, show(r)).toMatch(new RegExp(`\\[1,0\\]<stderr>:ringreduce: rank 0: hierarchical all-reduce: ${layout} \\(local links: shared memory; inputs of 1 MiB and more\\)\n`));
const saidFlat = (r: Run, why: string) => expect(r.stderr, show(r)).toContain(`[1,0]<stderr>:ringreduce: rank 0: flat ring: ${why}\n`);

describe.skipIf(skip !== undefined)('hierarchical all-reduce across network namespaces', () => {
  beforeAll(() => {
    hosts = emulatedHosts(PREFIX, 3, `10.78.${tag}`);
  });
  afterEach(() => {
    for (const c of children) c.kill('SIGKILL');
    children.clear();
  });
  afterAll(() => hosts?.down());

  it('2 x 2, auto: hierarchical (the --verbose line on rank 0); exact, bit-identical on every rank; sum, average, fp16; uneven sizes', async () => {
    const r = await ringrun([2, 2], ['--verbose', '-x', 'FP16=1']);
    expect(r.code, show(r)).toBe(0);
    saidHierarchical(r, '2 hosts x 2 ranks');
    expect(expectResults(r, 4)).toBe(6);
    // Each rank's two rings, made twice: for init's ring and for the tfjs comm thread's own ring
    // (init starts it; its fused gradient all-reduces take the same path).
    for (const k of [0, 1, 2, 3]) {
      const local = k ^ 1;
      const cross = (k + 2) % 4;
      const links = (what: string, peer: number, how: string) =>
        r.stderr.split('\n').filter((l) => l === `[1,${k}]<stderr>:ringreduce: rank ${k}: ${what} rank ${peer}: payloads through ${how}`).length;
      expect(links(k % 2 === 0 ? 'ghier.host link to' : 'ghier.host link from', local, 'shared memory'), show(r)).toBe(2);
      expect(links('ghier.cross link to', cross, `the socket (rank ${cross} is on another host: boot id or network namespace differ)`), show(r)).toBe(2);
    }
    expect(hosts.running()).toEqual([]);
  });

  it('2 x 3: hierarchical, exact and bit-identical', async () => {
    const r = await ringrun([3, 3], ['--verbose', '-x', 'COUNTS=1000003']);
    expect(r.code, show(r)).toBe(0);
    saidHierarchical(r, '2 hosts x 3 ranks');
    expect(expectResults(r, 6)).toBe(2);
  });

  it('3 x 1: the flat ring (nothing to reduce within a host), exact and bit-identical', async () => {
    const r = await ringrun([1, 1, 1], ['--verbose', '-x', 'COUNTS=1000003']);
    expect(r.code, show(r)).toBe(0);
    saidFlat(r, '3 hosts x 1 rank: nothing to reduce within a host');
    expect(expectResults(r, 3)).toBe(2);
  });

  it('uneven 3 + 1 falls back to the flat ring; with --hierarchical (on) rank 0 warns once naming the layout', async () => {
    const r = await ringrun([3, 1], ['--verbose', '-x', 'COUNTS=1000003']);
    expect(r.code, show(r)).toBe(0);
    saidFlat(r, '2 hosts with 3, 1 ranks: hosts with different numbers of ranks');
    expect(expectResults(r, 4)).toBe(2);
    const on = await ringrun([3, 1], ['--hierarchical', '-x', 'COUNTS=262145']);
    expect(on.code, show(on)).toBe(0);
    expect(on.stderr.match(/warning: rank 0: hierarchical all-reduce requested, but the ranks run on 2 hosts with 3, 1 ranks/g), show(on)).toHaveLength(1);
    expectResults(on, 4);
  });

  it('2 x 2 with ringrun --hierarchical=off, RINGREDUCE_HIERARCHICAL=0, or init({ hierarchical: false }): the flat ring', async () => {
    for (const how of [['--hierarchical=off'], ['-x', 'RINGREDUCE_HIERARCHICAL=0'], ['-x', 'INIT_HIERARCHICAL=false']]) {
      const r = await ringrun([2, 2], ['--verbose', '-x', 'COUNTS=262145', ...how]);
      expect(r.code, show(r)).toBe(0);
      saidFlat(r, 'hierarchical all-reduce is off (hierarchical: false, RINGREDUCE_HIERARCHICAL=0)');
      expectResults(r, 4);
    }
  });

  it('2 x 2, one rank passes another size: the typed mismatch error on every rank, no hang, and the ring goes on', async () => {
    const r = await ringrun([2, 2], ['-x', 'COUNTS=', '-x', 'MISMATCH=1']);
    expect(r.code, show(r)).toBe(0);
    for (const k of [0, 1, 2, 3]) {
      expect(r.stdout).toContain(
        `[1,${k}]<stdout>:rank ${k}: mismatch: RING_ERR_MISMATCH: rank ${k}: allreduce #1 'odd': ranks disagree on the element count (ranks 0,2,3: 300000; rank 1: 300001)`,
      );
      expect(r.stdout).toContain(`[1,${k}]<stdout>:rank ${k}: after the mismatch: exact`);
    }
  });
});
