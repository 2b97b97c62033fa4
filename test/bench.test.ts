import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLocalGroups, RingGroup } from '../src/index.js';
import { parseBenchArgs, sweep, type BenchConfig } from '../src/launcher/bench/args.js';
import { busbwBar, busbwBarScale, humanBytes } from '../src/launcher/bench/format.js';
import { BENCH_OPS, OP_INFO, rowSizes, type BenchOp } from '../src/launcher/bench/ops.js';
import { prepareRun, type BenchComm } from '../src/launcher/bench/runners.js';
import { ringrunBin, root, runNode } from './helpers/run.js';

/** alltoall, send and recv arrive with the lead's API branch; their tests run once it is merged. */

describe('ringrun bench arguments', () => {
  it('defaults, sizes with suffixes, every option', () => {
    expect(parseBenchArgs(['-np', '2'])).toEqual({
      kind: 'bench',
      config: { np: 2, minBytes: 4, maxBytes: 64 << 20, factor: 2, op: 'allreduce', reduce: 'sum', compression: 'none', iters: 20, warmup: 5, check: false, json: undefined, chunkBytes: undefined },
    });
    const c = parseBenchArgs(['-n', '4', '--min-bytes=1K', '--max-bytes', '16M', '--factor', '4', '--reduce', 'max', '--compression', 'bf16', '--iters', '3', '--warmup=0', '--check', '--json', 'o.json', '--chunk-bytes', '256K', '--bind-to', 'none']);
    expect(c).toMatchObject({ config: { np: 4, minBytes: 1024, maxBytes: 16 << 20, factor: 4, op: 'allreduce', reduce: 'max', compression: 'bf16', iters: 3, warmup: 0, check: true, json: 'o.json', chunkBytes: 256 << 10, bindTo: 'none' } });
    expect(parseBenchArgs(['--help']).kind).toBe('help');
    expect(parseBenchArgs(['-np', '2', '--bars'])).toMatchObject({ config: { bars: true } });
    expect(parseBenchArgs(['-np', '2', '--no-bars'])).toMatchObject({ config: { bars: false } });
    expect(() => parseBenchArgs(['-np', '2', '--bars=yes'])).toThrow(/--bars takes no value/);
    expect(sweep({ minBytes: 4, maxBytes: 64, factor: 2 })).toEqual([4, 8, 16, 32, 64]);
    expect(sweep({ minBytes: 6, maxBytes: 30, factor: 3 })).toEqual([4, 16]);
  });

  it.each(BENCH_OPS)('--op %s', (op) => {
    expect(parseBenchArgs(['-np', '2', '--op', op])).toMatchObject({ config: { op, reduce: 'sum', compression: 'none' } });
    expect(parseBenchArgs(['-np', '2', `--op=${op}`])).toMatchObject({ config: { op } });
  });

  it('--reduce: every reduction, for allreduce and reducescatter', () => {
    for (const reduce of ['sum', 'average', 'min', 'max', 'product']) {
      expect(parseBenchArgs(['-np', '2', '--reduce', reduce])).toMatchObject({ config: { op: 'allreduce', reduce } });
      expect(parseBenchArgs(['-np', '2', '--op', 'reducescatter', '--reduce', reduce])).toMatchObject({ config: { op: 'reducescatter', reduce } });
    }
  });

  it("nccl-tests' sizes and busbw factors", () => {
    expect(Object.fromEntries(BENCH_OPS.map((op) => [op, OP_INFO[op].busFactor(4)]))).toEqual({
      allreduce: 1.5,
      reducescatter: 0.75,
      allgather: 0.75,
      broadcast: 1,
      alltoall: 0.75,
      sendrecv: 1,
    });
    // Ops that split the size into N parts: multiples of 4N bytes, at least 4N, each once.
    expect(rowSizes('allgather', [4, 8, 16, 32, 64], 3)).toEqual([12, 24, 60]);
    expect(rowSizes('alltoall', [4, 1 << 20], 4)).toEqual([16, 1 << 20]);
    expect(rowSizes('allreduce', [4, 8, 16], 3)).toEqual([4, 8, 16]);
    expect(rowSizes('sendrecv', [4, 8], 2)).toEqual([4, 8]);
  });

  it('sizes for people, and a busbw bar on a log scale', () => {
    expect([4, 1024, 1536, 64 << 20, 4194296, 16 * 2 ** 30].map(humanBytes)).toEqual(['4 B', '1 KiB', '1.5 KiB', '64 MiB', '4 MiB', '16 GiB']);
    expect(humanBytes(4194280)).toBe('4 MiB'); // 3.99998 MiB to 3 digits
    expect(humanBytes(1000)).toBe('1000 B');
    expect(humanBytes(3 * 1024 * 1024 + 512 * 1024 + 7)).toBe('3.5 MiB');
    // Six cells a decade from 0.01 GB/s; eighths of a cell at the end; 24 cells at most.
    expect(busbwBar(0.005)).toBe('');
    expect(busbwBar(0.1)).toBe('██████');
    expect(busbwBar(1)).toBe('█'.repeat(12));
    expect(busbwBar(Math.pow(10, 0.25) * 0.01)).toBe('█▌');
    expect(busbwBar(1e6)).toBe('█'.repeat(24));
    expect(busbwBarScale()).toBe('|0.01 |0.1  |1    |10   |100 GB/s');
  });

  it('bad options name themselves', () => {
    expect(() => parseBenchArgs([])).toThrow(/-np is required/);
    expect(() => parseBenchArgs(['-np', '2', '--max-bytes', '12Q'])).toThrow(/--max-bytes must be a size in bytes/);
    expect(() => parseBenchArgs(['-np', '2', '--compression', 'zip'])).toThrow(/--compression must be none, fp16 or bf16, got 'zip'/);
    expect(() => parseBenchArgs(['-np', '2', '--factor', '1'])).toThrow(/--factor must be a number > 1/);
    expect(() => parseBenchArgs(['-np', '2', '--min-bytes', '2'])).toThrow(/--min-bytes must be at least 4/);
    expect(() => parseBenchArgs(['-np', '2', '--bogus'])).toThrow(/unknown option '--bogus'/);
    expect(() => parseBenchArgs(['-np', '2', '--bind-to', 'core'])).toThrow(/--bind-to must be one of slice, none, got 'core'/);
    expect(() => parseBenchArgs(['-np', '2', '--op', 'gather'])).toThrow(/--op must be one of allreduce, allgather, broadcast, reducescatter, alltoall, sendrecv, got 'gather'/);
    expect(() => parseBenchArgs(['-np', '2', '--reduce', 'mean'])).toThrow(/--reduce must be one of sum, average, min, max, product, got 'mean'/);
  });

  it('--op with a reduction (its old meaning) says to use --reduce', () => {
    expect(() => parseBenchArgs(['-np', '2', '--op', 'max'])).toThrow(/--op names the collective now .*; for the reduction use --reduce max/);
  });

  it('--reduce and --compression only where they apply, in any order; sendrecv needs two ranks', () => {
    expect(() => parseBenchArgs(['-np', '2', '--reduce', 'max', '--op', 'allgather'])).toThrow(/--reduce applies to --op allreduce and reducescatter, not allgather/);
    expect(() => parseBenchArgs(['-np', '2', '--op', 'reducescatter', '--compression', 'fp16'])).toThrow(/--compression applies to --op allreduce only, not reducescatter/);
    expect(() => parseBenchArgs(['-np', '2', '--op', 'broadcast', '--compression', 'none'])).toThrow(/--compression applies to --op allreduce only/);
    expect(() => parseBenchArgs(['-np', '1', '--op', 'sendrecv'])).toThrow(/--op sendrecv needs -np 2 or more/);
  });
});

/** Every rank runs `op` once at `bytes` with --check's data; the wrong elements per rank. */
async function runOn(op: BenchOp, comms: BenchComm[], bytes: number, config: Partial<BenchConfig> = {}): Promise<number[]> {
  const n = comms.length;
  const c = { ...(parseBenchArgs(['-np', String(n), '--op', op]) as { config: BenchConfig }).config, ...config };
  const [size] = rowSizes(op, [bytes], n);
  const runs = comms.map((comm, rank) =>
    prepareRun(op, { comm, config: c, rank, size: n, count: size / 4, input: new Float32Array(size / 4), output: new Float32Array(size / 4) }),
  );
  for (const r of runs) r.fill();
  await Promise.all(runs.map((r) => r.run()));
  return runs.map((r) => r.wrong());
}

/** runOn over an in-process ring of n RingGroups (each perhaps wrapped). */
async function runChecked(op: BenchOp, n: number, bytes: number, config: Partial<BenchConfig> = {}, wrap = (g: RingGroup): BenchComm => g as unknown as BenchComm) {
  const groups = await createLocalGroups(n, { chunkBytes: 256 });
  try {
    return await runOn(op, groups.map(wrap), bytes, config);
  } finally {
    await Promise.all(groups.map((g) => g.shutdown()));
  }
}

/**
 * alltoall, send and recv as the lead's API specifies them, over one-shot in-process mailboxes:
 * checks the bench's own expectations for these ops before the real ones exist.
 */
function specExchange(n: number): BenchComm[] {
  const boxes = new Map<string, { data: Promise<Float32Array>; put: (d: Float32Array) => void }>();
  const box = (key: string) => {
    if (!boxes.has(key)) {
      let put!: (d: Float32Array) => void;
      const data = new Promise<Float32Array>((resolve) => (put = resolve));
      boxes.set(key, { data, put });
    }
    return boxes.get(key)!;
  };
  return Array.from({ length: n }, (_, me) => ({
    async send(x: Float32Array, o: { dst: number }) {
      box(`p2p ${me}>${o.dst}`).put(x.slice());
    },
    async recv(into: Float32Array, o: { src: number }) {
      into.set(await box(`p2p ${o.src}>${me}`).data);
      return into;
    },
    async alltoall(x: Float32Array) {
      const part = x.length / n;
      for (let dst = 0; dst < n; dst++) box(`a2a ${me}>${dst}`).put(x.slice(dst * part, (dst + 1) * part));
      const parts = await Promise.all(Array.from({ length: n }, (_, src) => box(`a2a ${src}>${me}`).data));
      const data = new Float32Array(x.length);
      parts.forEach((p, src) => data.set(p, src * part));
      return { data, splits: parts.map((p) => p.length) };
    },
  })) as unknown as BenchComm[];
}

describe('ringrun bench --check (in-process rings)', () => {
  for (const op of BENCH_OPS) {
    describe(op, () => {
      const cases = [1, 2, 3].filter((n) => op !== 'sendrecv' || n > 1).flatMap((n) => [4, 12, 1036].map((bytes) => ({ n, bytes })));
      it.each(cases)('N=$n, $bytes bytes: no wrong element', async ({ n, bytes }) => {
        expect(await runChecked(op, n, bytes)).toEqual(Array(n).fill(0));
      });
    });
  }

  it.each([
    { op: 'alltoall' as const, n: 3 },
    { op: 'sendrecv' as const, n: 2 },
    { op: 'sendrecv' as const, n: 3 },
  ])('$op, N=$n, over the specified semantics: no wrong element, and a wrong one is counted', async ({ op, n }) => {
    expect(await runOn(op, specExchange(n), 1032)).toEqual(Array(n).fill(0));
    // The same exchange with element 1 of what arrives changed: every rank counts it.
    const spoilt = specExchange(n).map((c) => ({
      ...c,
      recv: async (into: Float32Array, o: { src: number }) => {
        await c.recv(into, o);
        into[1] += 1;
        return into;
      },
      alltoall: async (x: Float32Array) => {
        const r = await c.alltoall(x);
        r.data[1] += 1;
        return r;
      },
    }));
    const wrong = await runOn(op, spoilt, 1032);
    expect(wrong.every((w) => w > 0)).toBe(true);
  });

  it.each(['sum', 'average', 'min', 'max', 'product'] as const)('allreduce and reducescatter --reduce %s, N=3', async (reduce) => {
    expect(await runChecked('allreduce', 3, 1036, { reduce })).toEqual([0, 0, 0]);
    expect(await runChecked('reducescatter', 3, 1036, { reduce })).toEqual([0, 0, 0]);
  });

  for (const op of BENCH_OPS.filter((o) => o !== 'sendrecv')) {
    it(`${op}: a result off by one element is counted`, async () => {
      // Every method returns its result with element 1 changed (sendrecv has no returned result).
      const spoil = (g: RingGroup): BenchComm =>
        new Proxy(g, {
          get(t, k) {
            const f = Reflect.get(t, k) as unknown;
            if (typeof f !== 'function') return f;
            return async (...a: unknown[]) => {
              const r = (await (f as (...x: unknown[]) => Promise<unknown>).apply(t, a)) as Float32Array | { data: Float32Array };
              const out = r instanceof Float32Array ? r : r.data;
              out[1] += 1;
              return r;
            };
          },
        }) as unknown as BenchComm;
      const wrong = await runChecked(op, 2, 64, {}, spoil);
      expect(wrong.every((w) => w >= 1)).toBe(true);
    });
  }
});

describe('ringrun bench (real ranks)', () => {
  const bench = (args: string[], json: string) =>
    runNode([ringrunBin, 'bench', '-np', '2', '--min-bytes', '4', '--max-bytes', '1M', '--factor', '16', '--iters', '3', '--warmup', '1', '--check', '--json', json, ...args], {}, 60_000);
  const inTmp = async (f: (json: string) => Promise<void>) => {
    const dir = mkdtempSync(join(tmpdir(), 'rr-bench-'));
    try {
      await f(join(dir, 'rows.json'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  type Row = { op: string; bytes: number; redop: string; wrong: number; timeUs: number; algbwGBs: number; busbwGBs: number };

  it.each(['none', 'fp16', 'bf16'])('N=2, compression %s: a table, no wrong elements, and --json rows', (compression) =>
    inTmp(async (json) => {
      // --bars as a terminal would get it by default; piped output (here) has none by default.
      const r = await bench(['--compression', compression, ...(compression === 'none' ? ['--bars'] : [])], json);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`# ringreduce bench: all-reduce, N=2, kernels=\\w+, chunkBytes=\\d+, reduce=sum, compression=${compression}`));
      const { meta, rows } = JSON.parse(readFileSync(json, 'utf8')) as { meta: Record<string, unknown>; rows: Row[] };
      expect(rows.map((x) => x.bytes)).toEqual([4, 64, 1024, 16384, 262144]);
      // What the rows were measured with travels with them; the file is named on stdout.
      expect(meta).toMatchObject({ op: 'allreduce', n: 2, hosts: 1, dtype: 'float32', reduce: 'sum', compression, iters: 3 });
      expect(meta.version).toBe(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version);
      expect(r.stdout).toContain(`# wrote ${json}`);
      // No row of 16 MiB or more: no average over such sizes.
      expect(r.stdout).not.toContain('avg busbw over sizes >= 16 MiB');
      for (const row of rows) {
        expect(row).toMatchObject({ op: 'allreduce', redop: 'sum', wrong: 0 });
        expect(row.timeUs).toBeGreaterThan(0);
        expect(row.busbwGBs).toBeCloseTo(row.algbwGBs, 10); // N=2: busbw = algbw
      }
      const bar = compression === 'none' ? ' {2}[█▏▎▍▌▋▊▉]*' : '';
      expect(r.stdout).toMatch(new RegExp(`^\\s+256 KiB\\s+65536\\s+float\\s+sum\\s+[\\d.]+\\s+[\\d.]+\\s+[\\d.]+\\s+0${bar}$`, 'm'));
      expect(r.stdout).toMatch(/^\s+4 B\s+1\s+float/m);
      expect(r.stdout.includes('busbw (log scale)')).toBe(compression === 'none');
    }),
  );

  const ops: { op: BenchOp; args: string[]; label: string; redop: string; factor: number; first: number }[] = [
    { op: 'allgather', args: [], label: 'all-gather', redop: 'none', factor: 0.5, first: 8 },
    { op: 'broadcast', args: [], label: 'broadcast', redop: 'none', factor: 1, first: 4 },
    { op: 'reducescatter', args: ['--reduce', 'max'], label: 'reduce-scatter', redop: 'max', factor: 0.5, first: 8 },
    { op: 'allreduce', args: ['--reduce', 'product'], label: 'all-reduce', redop: 'product', factor: 1, first: 4 },
    { op: 'alltoall', args: [], label: 'all-to-all', redop: 'none', factor: 0.5, first: 8 },
    { op: 'sendrecv', args: [], label: 'send-recv', redop: 'none', factor: 1, first: 4 },
  ];
  for (const t of ops) {
    it(`N=2, --op ${[t.op, ...t.args].join(' ')}: checked rows with its busbw`, () =>
      inTmp(async (json) => {
        const r = await bench(['--op', t.op, ...t.args], json);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toContain(`# ringreduce bench: ${t.label}, N=2`);
        const { meta, rows } = JSON.parse(readFileSync(json, 'utf8')) as { meta: Record<string, unknown>; rows: Row[] };
        expect(rows.map((x) => x.bytes)).toEqual([t.first, 64, 1024, 16384, 262144]);
        for (const row of rows) {
          expect(row).toMatchObject({ op: t.op, redop: t.redop, wrong: 0 });
          expect(row.busbwGBs).toBeCloseTo(row.algbwGBs * t.factor, 10);
        }
      }),
    );
  }

  it.each([
    [['--op', 'mean'], "--op must be one of allreduce, allgather, broadcast, reducescatter, alltoall, sendrecv, got 'mean'"],
    [['--op', 'sum'], 'for the reduction use --reduce sum'],
    [['--reduce', 'mean'], "--reduce must be one of sum, average, min, max, product, got 'mean'"],
    [['--op', 'allgather', '--compression', 'fp16'], '--compression applies to --op allreduce only, not allgather'],
  ])('bad bench options %j: one line, exit 2', async (args, message) => {
    const r = await runNode([ringrunBin, 'bench', '-np', '2', ...args], {}, 20_000);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(message);
  });
});

describe('bench/mesh-floor.mjs and bench/mesh_floor.py (the floors of a 4-byte all-reduce)', () => {
  it('Node: runs N=2 and N=3, prints the time and CPU per operation; a bad N is a usage error', async () => {
    for (const n of [2, 3]) {
      const r = await runNode([join(root, 'bench', 'mesh-floor.mjs'), String(n), '200'], {}, 60_000);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^mesh floor \\(Node net\\), 4-byte all-reduce, N=${n}: \\d+\\.\\d us/op, \\d+\\.\\d us CPU per rank per op\\n$`));
    }
    const bad = await runNode([join(root, 'bench', 'mesh-floor.mjs'), '1'], {}, 30_000);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/usage: node bench\/mesh-floor.mjs N \[ITERS\]/);
  });

  it.skipIf(!existsSync('/usr/bin/python3'))('Python: N=3, the sum checked on every operation', () => {
    const out = execFileSync('/usr/bin/python3', [join(root, 'bench', 'mesh_floor.py'), '3', '200'], { encoding: 'utf8', timeout: 60_000 });
    expect(out).toMatch(/^mesh floor \(Python, blocking sockets\), 4-byte all-reduce, N=3: \d+\.\d us\/op\n$/);
  });
});
