import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from './helpers/run.js';

/**
 * bench/tcp_ring.py, the plain-TCP ceiling of compare.mjs --ceiling, must be a real all-reduce:
 * --check fills rank r's element i with (7i + 13r + 5q) mod 31 - 15 (q the round, 2 rounds) and
 * prints every rank's result, which must equal the sum worked out here. Sizes are empty, shorter
 * than N, prime and uneven; 64-byte chunks cut each segment into many, so chunks cross steps and,
 * with --streams 2, streams. compare.mjs runs it with /usr/bin/python3; so does this test.
 */

const py = '/usr/bin/python3';
const script = join(root, 'bench', 'tcp_ring.py');

function skipReason(): string | undefined {
  const r = spawnSync(py, ['-c', 'import numpy'], { encoding: 'utf8' });
  if (r.error) return `no ${py}: ${r.error.message}`;
  if (r.status !== 0) return `${py} has no numpy (apt-get install python3-numpy)`;
  return undefined;
}
const skip = skipReason();
if (skip) console.warn(`test/tcp-ring.test.ts skipped: ${skip}`);

const ROUNDS = 2;
const mod = (a: number, m: number) => ((a % m) + m) % m;
/** The exact all-reduced value of element i after the last round. */
const sumAt = (i: number, n: number) => {
  let s = 0;
  for (let r = 0; r < n; r++) s += mod(7 * i + 13 * r + 5 * (ROUNDS - 1), 31) - 15;
  return s;
};

interface CheckRow {
  bytes: number;
  wrong: number[];
  values?: number[][];
  checksums?: number[];
}

function check(n: number, sizes: number[], extra: string[]): CheckRow[] {
  const r = spawnSync(py, [script, String(n), '1', '0', ...sizes.map(String), '--check', ...extra], { encoding: 'utf8', timeout: 20_000 });
  expect(r.status, `exit ${r.status} ${r.signal ?? ''}\n${r.stdout}${r.stderr}`).toBe(0);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as CheckRow);
}

// 4 KiB + 4 bytes is 1025 elements: past the 1024 whose values --check prints, so its checksum.
const SIZES = [0, 4, 12, 28, 4 * 1021, 4 * 1025];

describe.skipIf(skip !== undefined)(`bench/tcp_ring.py --check${skip ? ` (skipped: ${skip})` : ''}`, () => {
  for (const n of [2, 3]) {
    for (const streams of [1, 2]) {
      it(`N=${n}, ${streams} stream${streams > 1 ? 's' : ''} per link: every rank holds the exact sum`, () => {
        const rows = check(n, SIZES, ['--chunk-bytes', '64', '--streams', String(streams)]);
        expect(rows.map((row) => row.bytes)).toEqual(SIZES);
        for (const row of rows) {
          const count = row.bytes / 4;
          const want = Array.from({ length: count }, (_, i) => sumAt(i, n));
          expect(row.wrong, `${row.bytes} B`).toEqual(Array(n).fill(0));
          if (count <= 1024) {
            expect(row.values, `${row.bytes} B`).toEqual(Array(n).fill(want));
          } else {
            const checksum = want.reduce((s, v, i) => s + v * (i % 1009), 0);
            expect(row.checksums, `${row.bytes} B`).toEqual(Array(n).fill(checksum));
          }
        }
      }, 25_000);
    }
  }

  it('one row of time per size, as compare.mjs reads it', () => {
    const r = spawnSync(py, [script, '2', '3', '1', '4', '65536'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { bytes: number; timeUs: number });
    expect(rows.map((row) => row.bytes)).toEqual([4, 65536]);
    for (const row of rows) expect(row.timeUs).toBeGreaterThan(0);
  }, 25_000);

  it('compare.mjs: --ceiling is in its help and refused outside --op allreduce', () => {
    const compare = join(root, 'bench', 'compare.mjs');
    expect(spawnSync(process.execPath, [compare, '--help'], { encoding: 'utf8' }).stdout).toMatch(/--ceiling +\(allreduce\) also run tcp-ring/);
    const r = spawnSync(process.execPath, [compare, '--op', 'alltoall', '--ceiling'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--ceiling goes with --op allreduce');
  });
});
