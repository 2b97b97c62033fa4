import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HIERARCHICAL_MIN_BYTES, PIECE_BYTES, type Hierarchy } from '../src/collectives/hierarchical.js';
import type { Communicator } from '../src/collectives/communicator.js';
import { tuning } from '../src/env.js';
import { RingError, RingPeerLostError } from '../src/errors.js';
import type { RingGroup } from '../src/group.js';
import { parseArgs } from '../src/launcher/args.js';
import { jobExports } from '../src/launcher/layout.js';
import { resolveOptions, type InitOptions, type ResolvedOptions } from '../src/options.js';
import { describeHosts, hostLayout, ranksOnMachine, subRings } from '../src/rendezvous/hosts.js';
import { formRing, withPollingForMachine } from '../src/rendezvous/ring.js';
import { startStoreServer } from '../src/rendezvous/store.js';
import { keys, resetKeys } from './helpers/machine-keys.js';
import { expected, firstDiff, input, sameBytes, withDeadline, type Op } from './helpers/reference.js';

/**
 * The hierarchical all-reduce (src/collectives/hierarchical.ts) in one process: ranks formed
 * through the real rendezvous and WebSockets, with machineKey() mocked so that they sit on
 * emulated hosts (test/hierarchical-netns.test.ts does it with processes in network namespaces).
 * Plus the layout decision (rendezvous/hosts.ts) and every way to set the option.
 */

vi.mock('../src/rendezvous/address.js', async (original) => (await import('./helpers/machine-keys.js')).mockAddress(await original()));

let cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  await Promise.all(cleanup.map((f) => f().catch(() => {})));
  cleanup = [];
  resetKeys();
});

const MIB = 1 << 20;
type Internals = { hierarchy?: Hierarchy; comm: Communicator };
const inside = (g: RingGroup) => g as unknown as Internals;

/**
 * One ring of `machines.length` ranks where rank r's machine key is machines[r]: each rank is
 * started only once the one before it has taken its key. `lines[r]` collects rank r's log.
 */
async function emulate(machines: string[], opts: (rank: number) => Partial<InitOptions> = () => ({}), env: Record<string, string> = { RINGREDUCE_VERBOSE: '1' }) {
  keys.emulated = true;
  const n = machines.length;
  const token = randomBytes(16).toString('hex');
  const lines: string[][] = machines.map(() => []);
  const store = await startStoreServer({ host: '127.0.0.1', port: 0, token, worldSize: n, logger: { info() {}, warn() {} } });
  const forming: Promise<RingGroup>[] = [];
  try {
    for (let rank = 0; rank < n; rank++) {
      keys.next.push(machines[rank]);
      const asked = keys.asked;
      const logger = { info: (m: string) => lines[rank].push(m), warn: (m: string) => lines[rank].push(`warning: ${m}`) };
      const o = { rank, size: n, token, store: `127.0.0.1:${store.endpoint.port}`, hostStore: false, logger, chunkBytes: 256 * 1024, timeoutMs: 20_000, startTimeoutMs: 20_000, ...opts(rank) };
      const p = formRing(resolveOptions(o, env));
      p.catch(() => {});
      forming.push(p);
      const t0 = Date.now();
      while (keys.asked === asked) {
        if (Date.now() - t0 > 10_000) throw new Error(`rank ${rank} did not ask for its machine key`);
        await new Promise((r) => setTimeout(r, 2));
      }
    }
    const settled = await withDeadline(Promise.allSettled(forming), 30_000, 'forming the ring');
    for (const s of settled) if (s.status === 'fulfilled') cleanup.push(() => s.value.shutdown());
    const failed = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed.length) throw failed[0].reason;
    return { groups: settled.map((s) => (s as PromiseFulfilledResult<RingGroup>).value), lines };
  } finally {
    await store.close();
  }
}

/** Runs one all-reduce on every rank; checks bit-identical results and, for exact data, the exact values. */
async function check(groups: RingGroup[], count: number, op: Op, o: { compression?: 'fp16'; tolerance?: number } = {}) {
  const inputs = groups.map((g) => input(Float32Array, op, g.rank, count) as Float32Array);
  const got = await withDeadline(Promise.all(groups.map((g, r) => g.allreduce(inputs[r], { op, compression: o.compression }))), 30_000, `allreduce ${op} of ${count}`);
  for (const x of got) expect(sameBytes(x, got[0]), 'bit-identical on every rank').toBe(true);
  const want = expected(Float32Array, op, inputs);
  if (!o.tolerance) expect(firstDiff(got[0], want)).toBeUndefined();
  else {
    let worst = 0;
    for (let i = 0; i < count; i++) worst = Math.max(worst, Math.abs(got[0][i] - want[i]));
    expect(worst).toBeLessThanOrEqual(o.tolerance);
  }
  return got[0];
}

/** Operations run so far on each rank's host ring (0 when it has none). */
const hostOps = (groups: RingGroup[]) => groups.map((g) => (inside(g).hierarchy?.host.comm as unknown as { ops?: { nextSeq: number } })?.ops?.nextSeq ?? 0);

describe('the layout decision (rendezvous/hosts.ts)', () => {
  it('2 x 2, 2 x 3 and non-contiguous ranks: hierarchical; host ring by world rank, cross ring by host', () => {
    const l = hostLayout(['a', 'a', 'b', 'b'], 'auto');
    expect(l).toEqual({ hierarchical: true, hosts: [[0, 1], [2, 3]], perHost: 2 });
    expect(subRings(l as Extract<typeof l, { hierarchical: true }>, 3)).toEqual({ local: [2, 3], cross: [1, 3] });
    expect(hostLayout(['a', 'a', 'a', 'b', 'b', 'b'], 'on')).toEqual({ hierarchical: true, hosts: [[0, 1, 2], [3, 4, 5]], perHost: 3 });
    // Hosts in order of their first rank; a host's ranks need not be contiguous.
    const nc = hostLayout(['b', 'a', 'a', 'b'], 'auto');
    expect(nc).toEqual({ hierarchical: true, hosts: [[0, 3], [1, 2]], perHost: 2 });
    const rings = subRings(nc as Extract<typeof nc, { hierarchical: true }>, 2);
    expect(rings).toEqual({ local: [1, 2], cross: [3, 2] });
  });

  it('3 x 1, uneven 3 + 1, one host, and off: the flat ring, with the reason', () => {
    expect(hostLayout(['a', 'b', 'c'], 'auto')).toEqual({ hierarchical: false, hosts: [[0], [1], [2]], reason: '3 hosts x 1 rank: nothing to reduce within a host' });
    expect(hostLayout(['a', 'a', 'a', 'b'], 'on')).toEqual({ hierarchical: false, hosts: [[0, 1, 2], [3]], reason: '2 hosts with 3, 1 ranks: hosts with different numbers of ranks' });
    expect(hostLayout(['a', 'a', 'a'], 'auto')).toMatchObject({ hierarchical: false, reason: '3 ranks on one host: no link between hosts to spare' });
    expect(hostLayout(['a', 'a', 'b', 'b'], 'off')).toMatchObject({ hierarchical: false, reason: 'hierarchical all-reduce is off (hierarchical: false, RINGREDUCE_HIERARCHICAL=0)' });
    expect(describeHosts([[0, 1], [2, 3]])).toBe('2 hosts x 2 ranks');
  });

  it('ranks on one machine: one boot id, whatever the network namespace; busy polling off by default beyond its CPUs', () => {
    expect(ranksOnMachine(['k1 net:[1]', 'k1 net:[2]', 'k2 net:[1]', 'k1 net:[3]'], 0)).toBe(3);
    expect(ranksOnMachine(['k1 net:[1]', 'k1 net:[2]', 'k2 net:[1]', 'k1 net:[3]'], 2)).toBe(1);
    expect(ranksOnMachine(['host-a', 'host-b', 'host-a'], 2)).toBe(2); // no /proc: host names
    const n = cpus().length;
    const machines = (k: number) => Array.from({ length: k }, (_, r) => `boot net:[${r}]`); // k emulated hosts, one kernel
    const o = { busyPollIsDefault: true, busyPollUs: 1000, localSize: 1, verbose: false } as ResolvedOptions;
    expect(withPollingForMachine(o, machines(n + 1), 0).busyPollUs).toBe(0);
    expect(withPollingForMachine(o, machines(n), 0).busyPollUs).toBe(1000);
    // A configured value stays, whatever the machine.
    expect(withPollingForMachine({ ...o, busyPollIsDefault: false }, machines(n + 1), 0).busyPollUs).toBe(1000);
  });
});

describe('the setting: options.hierarchical, RINGREDUCE_HIERARCHICAL, ringrun --hierarchical', () => {
  const base = { rank: 0, size: 1 };
  it('options and environment: auto by default, true/false, auto|1|0|on|off; the option wins; bad values name it', () => {
    expect(resolveOptions(base, {}).hierarchical).toBe('auto');
    expect(resolveOptions({ ...base, hierarchical: true }, {}).hierarchical).toBe('on');
    expect(resolveOptions({ ...base, hierarchical: false }, { RINGREDUCE_HIERARCHICAL: '1' }).hierarchical).toBe('off');
    for (const [v, want] of [['auto', 'auto'], ['1', 'on'], ['on', 'on'], ['0', 'off'], ['false', 'off'], [' AUTO ', 'auto']] as const) {
      expect(resolveOptions(base, { RINGREDUCE_HIERARCHICAL: v }).hierarchical, v).toBe(want);
    }
    expect(() => tuning({ RINGREDUCE_HIERARCHICAL: 'yes please' })).toThrow("environment variable RINGREDUCE_HIERARCHICAL must be auto, 1 or 0 (true/false), got 'yes please'");
    expect(() => resolveOptions({ ...base, hierarchical: 'on' as never }, {})).toThrow(`options.hierarchical must be 'auto', true or false, got "on"`);
  });

  it('ringrun --hierarchical, =auto/on/off, or followed by its value; passed to ranks as RINGREDUCE_HIERARCHICAL', () => {
    const run = (...a: string[]) => {
      const p = parseArgs(['-np', '2', ...a, 'node', 'x.js'], {});
      if (p.kind !== 'run') throw new Error(p.kind);
      return p.config;
    };
    expect(run().hierarchical).toBeUndefined();
    expect(jobExports(run()).has('RINGREDUCE_HIERARCHICAL')).toBe(false);
    for (const [args, mode, env] of [
      [['--hierarchical'], 'on', '1'],
      [['--hierarchical=off'], 'off', '0'],
      [['--hierarchical', 'auto'], 'auto', 'auto'],
      [['--hierarchical=on'], 'on', '1'],
    ] as const) {
      const c = run(...args);
      expect(c.hierarchical, args.join(' ')).toBe(mode);
      expect(c.command).toBe('node');
      expect(jobExports(c).get('RINGREDUCE_HIERARCHICAL')).toBe(env);
    }
    expect(() => run('--hierarchical=maybe')).toThrow("--hierarchical takes auto, on or off (e.g. --hierarchical=off), got 'maybe'");
  });
});

describe('hierarchical all-reduce on emulated hosts (in one process)', () => {
  it('2 x 2, auto: hierarchical (rank 0 says so); exact and bit-identical for sum and average, uneven sizes and pieces; small inputs stay flat', { timeout: 60_000 }, async () => {
    const { groups, lines } = await emulate(['A', 'A', 'B', 'B']);
    expect(groups.map((g) => inside(g).hierarchy !== undefined)).toEqual([true, true, true, true]);
    expect(lines[0].join('\n')).toMatch(/^rank 0: hierarchical all-reduce: 2 hosts x 2 ranks \(local links: (shared memory|sockets: .+); inputs of 1 MiB and more\)$/m);
    for (const l of lines.slice(1)) expect(l.join('\n')).not.toMatch(/hierarchical|flat ring/);
    // Counts that split unevenly in 2 segments, then in chunks, and odd against everything.
    const counts = [HIERARCHICAL_MIN_BYTES / 4, HIERARCHICAL_MIN_BYTES / 4 + 1, 1_000_003];
    for (const count of counts) for (const op of ['sum', 'average', 'max'] as const) await check(groups, count, op);
    expect(hostOps(groups)).toEqual([1 + 2 * 9, 1 + 2 * 9, 1 + 2 * 9, 1 + 2 * 9]); // the barrier, then RS + AG per call
    await check(groups, 1000, 'sum'); // eager
    await check(groups, HIERARCHICAL_MIN_BYTES / 4 - 1, 'sum'); // just below: the flat ring
    expect(hostOps(groups)[0]).toBe(19);
    // Larger than PIECE_BYTES: three pieces, the host and cross-host rings overlapping.
    const count = Math.floor((2.5 * PIECE_BYTES) / 4) + 7;
    for (const op of ['sum', 'average'] as const) await check(groups, count, op);
    expect(hostOps(groups)).toEqual([31, 31, 31, 31]);
  });

  it('2 x 3, non-contiguous ranks: exact; fp16 on the cross-host rings within its bound', { timeout: 30_000 }, async () => {
    const { groups } = await emulate(['A', 'B', 'A', 'B', 'B', 'A']);
    expect(inside(groups[0]).hierarchy!.host.members).toEqual([0, 2, 5]);
    expect(inside(groups[0]).hierarchy!.cross.members).toEqual([0, 1]);
    await check(groups, 400_009, 'sum');
    await check(groups, 400_009, 'average');
    // |x| <= 120 after the host step; fp16 keeps 11 bits: each cross hop rounds by at most 2^-11 relative.
    await check(groups, 400_009, 'sum', { compression: 'fp16', tolerance: 0.5 });
  });

  it('concurrent all-reduces (hierarchical and not) with other collectives between them: each exact, in order', async () => {
    const { groups } = await emulate(['A', 'B', 'A', 'B']);
    const count = 300_007;
    const inputs = groups.map((g) => [0, 1, 2].map((k) => input(Float32Array, 'sum', g.rank + k, count) as Float32Array));
    const results = await withDeadline(
      Promise.all(
        groups.map((g, r) =>
          Promise.all([
            g.allreduce(inputs[r][0], { name: 'a' }),
            g.broadcast(new Float32Array([r]), { root: 1 }),
            g.allreduce(inputs[r][1], { name: 'b' }),
            g.allreduce(new Float32Array([r]), { name: 'small' }),
            g.allreduce(inputs[r][2], { name: 'c' }),
          ]),
        ),
      ),
      30_000,
      'concurrent',
    );
    for (const [i, k] of [[0, 0], [2, 1], [4, 2]]) {
      const want = expected(Float32Array, 'sum', inputs.map((x) => x[k]));
      for (const res of results) expect(firstDiff(res[i] as Float32Array, want)).toBeUndefined();
    }
    for (const res of results) expect(Array.from(res[3] as Float32Array)).toEqual([6]);
  });

  it('ranks that disagree (another size, or a tiny array on one rank): the usual mismatch error on every rank, then the ring goes on', async () => {
    const { groups } = await emulate(['A', 'A', 'B', 'B']);
    const count = 400_000;
    for (const odd of [count + 1, 3]) {
      const calls = groups.map((g, r) => g.allreduce(new Float32Array(r === 2 ? odd : count).fill(1), { name: 'm' }).then(() => undefined, (e: RingError) => e));
      const errors = await withDeadline(Promise.all(calls), 20_000, 'mismatch');
      for (const e of errors) {
        expect(e?.code).toBe('RING_ERR_MISMATCH');
        expect(e?.message).toContain(`ranks disagree on the element count (ranks 0,1,3: ${count}; rank 2: ${odd})`);
      }
    }
    await check(groups, count, 'sum');
  });

  it('a cross-host ring that breaks: every rank fails the all-reduce with a typed error, none hangs', async () => {
    const { groups } = await emulate(['A', 'A', 'B', 'B']);
    // Rank 3's cross-host ring (with rank 1) fails as a lost peer would make it.
    const cross = inside(groups[3]).hierarchy!.cross.comm as unknown as { fatal(e: RingError): void };
    cross.fatal(new RingPeerLostError('rank 1: rank 0 (left neighbour) is gone (test)', { rank: 1, ranks: [0] }));
    const errors = await withDeadline(
      Promise.all(groups.map((g) => g.allreduce(new Float32Array(400_000).fill(1)).then(() => undefined, (e: RingError) => e))),
      20_000,
      'broken cross ring',
    );
    for (const e of errors) expect(e?.code, String(e)).toBe('RING_ERR_PEER_LOST');
    expect(errors.some((e) => /hierarchical allreduce: on the cross-host ring of world ranks 1, 3/.test(e!.message))).toBe(true);
    // The world ring failed with it: later calls reject at once.
    await expect(groups[0].barrier()).rejects.toMatchObject({ code: 'RING_ERR_PEER_LOST' });
  });

  it('false, or RINGREDUCE_HIERARCHICAL=0: the flat ring on a 2 x 2 layout, and rank 0 says why', async () => {
    for (const [opts, env] of [[{ hierarchical: false }, {}], [{}, { RINGREDUCE_HIERARCHICAL: '0' }]] as const) {
      const { groups, lines } = await emulate(['A', 'A', 'B', 'B'], () => opts, { RINGREDUCE_VERBOSE: '1', ...env });
      expect(groups.map((g) => inside(g).hierarchy)).toEqual([undefined, undefined, undefined, undefined]);
      expect(lines[0]).toContain('rank 0: flat ring: hierarchical all-reduce is off (hierarchical: false, RINGREDUCE_HIERARCHICAL=0)');
      await check(groups, 300_000, 'sum');
      await Promise.all(groups.map((g) => g.shutdown()));
    }
  });

  it('uneven 3 + 1: the flat ring (verbose says why; with true, one warning on rank 0)', async () => {
    const auto = await emulate(['A', 'A', 'A', 'B']);
    expect(auto.groups.map((g) => inside(g).hierarchy)).toEqual([undefined, undefined, undefined, undefined]);
    expect(auto.lines[0]).toContain('rank 0: flat ring: 2 hosts with 3, 1 ranks: hosts with different numbers of ranks');
    await check(auto.groups, 300_000, 'sum');
    await Promise.all(auto.groups.map((g) => g.shutdown()));
    const on = await emulate(['A', 'A', 'A', 'B'], () => ({ hierarchical: true }), {});
    expect(on.lines[0]).toEqual([
      'warning: rank 0: hierarchical all-reduce requested, but the ranks run on 2 hosts with 3, 1 ranks (it needs >= 2 hosts with the same number >= 2 of ranks each): all-reduces use the flat ring',
    ]);
    expect(on.lines.slice(1).flat()).toEqual([]);
  });

  it('ranks with different settings refuse to form the ring, naming them', async () => {
    const err = await emulate(['A', 'A', 'B', 'B'], (r) => ({ hierarchical: r === 3 ? false : 'auto' }), {}).then(
      () => undefined,
      (e: RingError) => e,
    );
    expect(err?.code).toBe('RING_ERR_MISMATCH');
    expect(err?.message).toContain(
      'ranks disagree on the hierarchical all-reduce (options.hierarchical, RINGREDUCE_HIERARCHICAL) (ranks 0,1,2: auto (hierarchical); rank 3: off (flat ring))',
    );
  });

  it('settings that differ but agree on the layout (auto and true; false and a 3 x 1 layout) form the ring', async () => {
    const mixed = await emulate(['A', 'A', 'B', 'B'], (r) => ({ hierarchical: r === 1 ? true : 'auto' }), {});
    expect(mixed.groups.every((g) => inside(g).hierarchy !== undefined)).toBe(true);
    await check(mixed.groups, 300_000, 'sum');
    await Promise.all(mixed.groups.map((g) => g.shutdown()));
    const flat = await emulate(['A', 'B', 'C'], (r) => ({ hierarchical: r === 0 ? false : 'auto' }), {});
    expect(flat.groups.every((g) => inside(g).hierarchy === undefined)).toBe(true);
  });
});
