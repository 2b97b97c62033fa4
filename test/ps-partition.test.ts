import { describe, expect, it } from 'vitest';
import { chunksOf, partition, type TensorSpec } from '../src/ps/partition.js';

/** Seeded sizes of a model: a few large matrices, many small vectors (biases), some empty. */
function model(seed: number, count: number): TensorSpec[] {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  return Array.from({ length: count }, (_, i) => ({ name: `layer${String(i).padStart(3, '0')}/${i % 2 ? 'bias' : 'kernel'}`, size: i % 2 ? Math.floor(rnd() * 512) : Math.floor(rnd() * 300_000) }));
}

describe('partition', () => {
  it('covers every element of every tensor exactly once, in name order, keys 0..n-1', () => {
    const tensors = model(7, 21);
    const p = partition([...tensors].reverse(), { servers: 3, maxChunkElements: 65_536 });
    expect(p.tensors.map((t) => t.name)).toEqual(tensors.map((t) => t.name).sort());
    expect(p.chunks.map((c) => c.key)).toEqual(p.chunks.map((_, i) => i));
    p.tensors.forEach((t, ti) => {
      const mine = p.chunks.filter((c) => c.tensor === ti);
      let at = 0;
      for (const c of mine) {
        expect(c.offset).toBe(at);
        expect(c.name).toBe(t.name);
        at += c.length;
      }
      expect(at).toBe(t.size);
      expect(mine.length).toBeGreaterThanOrEqual(1); // an empty tensor still has its key
    });
    expect(p.load.reduce((a, b) => a + b, 0)).toBe(tensors.reduce((a, t) => a + t.size, 0));
  });

  it.each([1, 2, 3, 4, 5, 7, 8])('%i servers: no server holds more than 1.2x the mean (and chunks fit a frame)', (servers) => {
    for (const seed of [1, 2, 3]) {
      for (const maxChunkElements of [262_144, 4096]) {
        const p = partition(model(seed, 30), { servers, maxChunkElements });
        const mean = p.load.reduce((a, b) => a + b, 0) / servers;
        expect(Math.max(...p.load), `seed ${seed}, chunk ${maxChunkElements}`).toBeLessThanOrEqual(1.2 * mean);
        for (const c of p.chunks) expect(c.length).toBeLessThanOrEqual(maxChunkElements);
        for (let s = 0; s < servers; s++) expect(chunksOf(p, s).reduce((a, c) => a + c.length, 0)).toBe(p.load[s]);
      }
    }
  });

  it('one huge tensor is split evenly over the servers', () => {
    const p = partition([{ name: 'w', size: 1_000_003 }], { servers: 4, maxChunkElements: 1 << 18 });
    expect(Math.max(...p.load) / (1_000_003 / 4)).toBeLessThanOrEqual(1.2);
    const lengths = p.chunks.map((c) => c.length);
    expect(Math.max(...lengths) - Math.min(...lengths)).toBeLessThanOrEqual(1);
  });

  it('is deterministic whatever order the tensors come in, and a tiny model stays whole', () => {
    const t = model(5, 9);
    const a = partition(t, { servers: 3, maxChunkElements: 10_000 });
    const b = partition([...t].reverse(), { servers: 3, maxChunkElements: 10_000 });
    expect(b).toEqual(a);
    const tiny = partition([{ name: 'b', size: 3 }, { name: 'a', size: 5 }], { servers: 2, maxChunkElements: 1 << 18 });
    expect(tiny.chunks.map((c) => [c.name, c.length, c.server])).toEqual([['a', 5, 0], ['b', 3, 1]]);
  });

  it('refuses nonsense', () => {
    expect(() => partition([{ name: 'a', size: 1 }], { servers: 0, maxChunkElements: 1 })).toThrow(/servers/);
    expect(() => partition([{ name: 'a', size: 1 }, { name: 'a', size: 2 }], { servers: 1, maxChunkElements: 8 })).toThrow(/twice/);
    expect(() => partition([{ name: 'a', size: -1 }], { servers: 1, maxChunkElements: 8 })).toThrow(/elements/);
  });
});
