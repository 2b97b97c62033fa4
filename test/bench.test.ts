import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseBenchArgs, sweep } from '../src/launcher/bench/args.js';
import { ringrunBin, runNode } from './helpers/run.js';

describe('ringrun bench arguments', () => {
  it('defaults, sizes with suffixes, every option', () => {
    expect(parseBenchArgs(['-np', '2'])).toEqual({
      kind: 'bench',
      config: { np: 2, minBytes: 4, maxBytes: 64 << 20, factor: 2, op: 'sum', compression: 'none', iters: 20, warmup: 5, check: false, json: undefined, chunkBytes: undefined },
    });
    const c = parseBenchArgs(['-n', '4', '--min-bytes=1K', '--max-bytes', '16M', '--factor', '4', '--op', 'max', '--compression', 'bf16', '--iters', '3', '--warmup=0', '--check', '--json', 'o.json', '--chunk-bytes', '256K', '--bind-to', 'none']);
    expect(c).toMatchObject({ config: { np: 4, minBytes: 1024, maxBytes: 16 << 20, factor: 4, op: 'max', compression: 'bf16', iters: 3, warmup: 0, check: true, json: 'o.json', chunkBytes: 256 << 10, bindTo: 'none' } });
    expect(parseBenchArgs(['--help']).kind).toBe('help');
    expect(sweep({ minBytes: 4, maxBytes: 64, factor: 2 })).toEqual([4, 8, 16, 32, 64]);
    expect(sweep({ minBytes: 6, maxBytes: 30, factor: 3 })).toEqual([4, 16]);
  });

  it('bad options name themselves', () => {
    expect(() => parseBenchArgs([])).toThrow(/-np is required/);
    expect(() => parseBenchArgs(['-np', '2', '--max-bytes', '12Q'])).toThrow(/--max-bytes must be a size in bytes/);
    expect(() => parseBenchArgs(['-np', '2', '--compression', 'zip'])).toThrow(/--compression must be none, fp16 or bf16, got 'zip'/);
    expect(() => parseBenchArgs(['-np', '2', '--factor', '1'])).toThrow(/--factor must be a number > 1/);
    expect(() => parseBenchArgs(['-np', '2', '--min-bytes', '2'])).toThrow(/--min-bytes must be at least 4/);
    expect(() => parseBenchArgs(['-np', '2', '--bogus'])).toThrow(/unknown option '--bogus'/);
    expect(() => parseBenchArgs(['-np', '2', '--bind-to', 'core'])).toThrow(/--bind-to must be one of slice, none, got 'core'/);
  });
});

describe('ringrun bench (real ranks)', () => {
  it.each(['none', 'fp16', 'bf16'])('N=2, compression %s: a table, no wrong elements, and --json rows', async (compression) => {
    const dir = mkdtempSync(join(tmpdir(), 'rr-bench-'));
    try {
      const json = join(dir, 'rows.json');
      const r = await runNode([ringrunBin, 'bench', '-np', '2', '--min-bytes', '4', '--max-bytes', '1M', '--factor', '16', '--iters', '3', '--warmup', '1', '--check', '--compression', compression, '--json', json], {}, 60_000);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`# ringreduce bench: all-reduce, N=2, kernels=\\w+, chunkBytes=\\d+, op=sum, compression=${compression}`));
      const rows = JSON.parse(readFileSync(json, 'utf8'));
      expect(rows.map((x: { bytes: number }) => x.bytes)).toEqual([4, 64, 1024, 16384, 262144]);
      for (const row of rows) {
        expect(row.wrong).toBe(0);
        expect(row.timeUs).toBeGreaterThan(0);
        expect(row.busbwGBs).toBeCloseTo(row.algbwGBs, 10); // N=2: busbw = algbw
      }
      expect(r.stdout).toMatch(/^\s+262144\s+65536\s+float\s+sum\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0$/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad bench options: one line, exit 2', async () => {
    const r = await runNode([ringrunBin, 'bench', '-np', '2', '--op', 'mean'], {}, 20_000);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain("--op must be sum, average, min, max or product, got 'mean'");
  });
});
