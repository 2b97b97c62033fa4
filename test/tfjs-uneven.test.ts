import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';

const fixture = join(root, 'test', 'fixtures', 'tfjs-uneven.mjs');

it('uneven shards: model.fit fails at train begin on every rank with both batch counts and the fix; dropRemainder trains', async () => {
  const bad = await runNode([ringrunBin, '-np', '2', '--timeout', '60', 'node', fixture], { UNEVEN: '1' }, 90_000);
  expect(bad.code, bad.stderr).toBe(0);
  for (const r of [0, 1]) {
    expect(bad.stdout).toMatch(
      new RegExp(`\\[1,${r}\\]<stdout>:rank ${r}: RING_ERR_MISMATCH: rank ${r}: model\\.fit runs a different number of batches per epoch on each rank \\(rank 0: 3, rank 1: 2\\).*dropRemainder: true`),
    );
  }
  const good = await runNode([ringrunBin, '-np', '2', '--timeout', '60', 'node', fixture], { UNEVEN: '0' }, 90_000);
  expect(good.code, good.stderr).toBe(0);
  expect(good.stdout).toMatch(/\[1,0\]<stdout>:rank 0: trained 2 epochs/);
  expect(good.stdout).toMatch(/\[1,1\]<stdout>:rank 1: trained 2 epochs/);
}, 200_000);
