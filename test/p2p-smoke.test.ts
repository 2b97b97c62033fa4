import { describe, expect, it } from 'vitest';
import { createLocalGroups } from '../src/index.js';

describe.each(['memory', 'ws'] as const)('p2p smoke %s', (transport) => {
  it('ring shift, alltoall, group', async () => {
    const gs = await createLocalGroups(4, { transport });
    const n = 4;
    const outs = await Promise.all(
      gs.map(async (g) => {
        const r = g.rank;
        const into = new Float32Array(5);
        const big = new Float32Array(300000);
        const bigIn = big.map((_, i) => r * 1e6 + i);
        const [, got, , gotBig] = await Promise.all([
          g.send(Float32Array.from([r, r, r, r, r]), { dst: (r + 1) % n, tag: 3 }),
          g.recv(into, { src: (r + n - 1) % n, tag: 3 }),
          g.send(bigIn, { dst: (r + 1) % n }),
          g.recv(new Float32Array(300000), { src: (r + n - 1) % n }),
        ]);
        const a = await g.alltoall(Int32Array.from({ length: 8 }, (_, i) => r * 100 + i));
        const grp = await g.newGroup([0, 2, 3]);
        const s = grp ? await grp.allreduce(Float32Array.of(r)) : null;
        return { got: Array.from(got), big0: gotBig[0], big1: gotBig[299999], a: Array.from(a.data), splits: a.splits, s: s && s[0], gr: grp?.rank };
      }),
    );
    for (let r = 0; r < n; r++) {
      const l = (r + n - 1) % n;
      expect(outs[r].got).toEqual([l, l, l, l, l]);
      expect(outs[r].big0).toBe(l * 1e6);
      expect(outs[r].big1).toBe(l * 1e6 + 299999);
      expect(outs[r].a).toEqual([0, 1, 2, 3].flatMap((j) => [j * 100 + 2 * r, j * 100 + 2 * r + 1]));
    }
    expect(outs.map((o) => o.s)).toEqual([5, null, 5, 5]);
    expect(outs.map((o) => o.gr)).toEqual([0, undefined, 1, 2]);
    await Promise.all(gs.map((g) => g.shutdown()));
  }, 30000);
});
