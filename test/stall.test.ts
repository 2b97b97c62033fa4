import { describe, expect, it } from 'vitest';
import { createLocalGroups } from '../src/index.js';
import { withDeadline } from './helpers/reference.js';

/**
 * Any collective that waits longer than stallWarningMs says so once, naming the ranks that have
 * not reached it and the last operation each was seen in (issue 13: a rank with one batch more
 * waited silently in metricAverage's all-reduce until the 300 s timeout).
 */
describe.each(['memory', 'ws'] as const)('stall warnings over %s', (transport) => {
  it('a rank that stays behind is named once, with where it was last seen; the operation still completes', async () => {
    const logs: string[][] = [[], [], []];
    const gs = await createLocalGroups(3, {
      transport,
      stallWarningMs: 300,
      logger: {
        info() {},
        // One logger serves the three ranks: file each line under the rank it starts with.
        warn: (m: string) => logs[Number(/^rank (\d+)/.exec(m)?.[1])]?.push(m),
      },
    });
    try {
      await Promise.all(gs.map((g) => g.allreduce(Float32Array.of(1), { name: 'batch 7' })));
      // Ranks 0 and 1 run one more batch; rank 2 has stopped.
      const extra = gs.slice(0, 2).map((g) => g.allreduce(Float32Array.of(1), { name: 'batch 8' }));
      await new Promise((r) => setTimeout(r, 900));
      for (const r of [0, 1]) {
        const warned = logs[r].filter((l) => l.includes("'batch 8' has waited"));
        expect(warned, logs[r].join('\n')).toHaveLength(1);
        expect(warned[0]).toMatch(
          new RegExp(`^rank ${r}: allreduce #\\d+ 'batch 8' has waited \\d+\\.\\d s: rank 2 has not reached it \\(rank 2 was last seen in allreduce #\\d+ 'batch 7'\\)\\. The ring is alive`),
        );
      }
      expect(logs[2]).toEqual([]);
      // Rank 2 arrives: the operation completes, exact.
      const late = await withDeadline(Promise.all([...extra, gs[2].allreduce(Float32Array.of(1), { name: 'batch 8' })]), 10_000, 'late rank');
      expect(late.map((x) => x[0])).toEqual([3, 3, 3]);
    } finally {
      await Promise.all(gs.map((g) => g.shutdown()));
    }
  }, 30_000);
});
