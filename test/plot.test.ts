import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { root, runNode } from './helpers/run.js';

it('bench/plot.mjs draws busbw against size as an SVG: a panel per N, a line per series, log axes in binary units', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rr-plot-'));
  try {
    const rows = [2, 4].flatMap((n) =>
      ['rr-none', 'gloo'].flatMap((series, k) => [4, 1 << 20, 64 << 20].map((bytes, i) => ({ series, n, bytes, busbwGBs: (k + 1) * 10 ** (i - 3) }))),
    );
    writeFileSync(join(dir, 'rows.json'), JSON.stringify(rows));
    const r = await runNode([join(root, 'bench', 'plot.mjs'), join(dir, 'rows.json'), join(dir, 'out.svg')], {}, 60_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`# wrote ${join(dir, 'out.svg')}`);
    const svg = readFileSync(join(dir, 'out.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    for (const text of ['N=2', 'N=4', 'rr-none', 'gloo', '64 MiB', '1 MiB', '4 B', 'busbw (GB/s)']) expect(svg, text).toContain(`>${text}<`);
    expect(svg.match(/class="mark-line role-mark/g)).toHaveLength(4); // 2 panels x 2 series
    const bad = await runNode([join(root, 'bench', 'plot.mjs')], {}, 30_000);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('Usage: node bench/plot.mjs ROWS.json OUT.svg');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 90_000);
