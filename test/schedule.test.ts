import { describe, expect, it } from 'vitest';
import { chunkCount, chunkRange, gatherBlock, ringSegment, segmentRange } from '../src/collectives/schedule.js';

describe('ring schedule', () => {
  it('segments tile the buffer, earlier segments take the remainder', () => {
    for (const n of [1, 2, 3, 5, 6]) {
      for (const count of [0, 1, 2, n - 1, 7, 1000, 1_000_003]) {
        let next = 0;
        for (let i = 0; i < n; i++) {
          const s = segmentRange(count, n, i);
          expect(s.offset).toBe(next);
          expect(s.length).toBe(Math.floor(count / n) + (i < count % n ? 1 : 0));
          next += s.length;
        }
        expect(next).toBe(count);
      }
    }
  });

  it('chunks tile a segment; out-of-range chunks are undefined', () => {
    const span = { offset: 10, length: 23 };
    expect(chunkCount(23, 5)).toBe(5);
    expect(chunkCount(0, 5)).toBe(0);
    const chunks = Array.from({ length: 5 }, (_, c) => chunkRange(span, 5, c));
    expect(chunks.map((c) => [c!.offset, c!.length])).toEqual([[10, 5], [15, 5], [20, 5], [25, 5], [30, 3]]);
    expect(chunkRange(span, 5, 5)).toBeUndefined();
    expect(chunkRange(span, 5, -1)).toBeUndefined();
    expect(chunkRange({ offset: 0, length: 0 }, 5, 0)).toBeUndefined();
  });

  it('reduce-scatter ends with rank r owning segment r; each segment is received once per phase', () => {
    for (const n of [2, 3, 4, 6]) {
      for (let r = 0; r < n; r++) {
        const left = (r - 1 + n) % n;
        const rsRecv = Array.from({ length: n - 1 }, (_, h) => ringSegment(left, h, n));
        const agRecv = Array.from({ length: n - 1 }, (_, t) => ringSegment(left, n - 1 + t, n));
        expect(rsRecv[n - 2]).toBe(r);
        expect(new Set(rsRecv).size).toBe(n - 1);
        expect(rsRecv).not.toContain((r - 1 + n) % n); // the segment r sends first is never received in RS
        expect(new Set(agRecv).size).toBe(n - 1);
        expect(agRecv).not.toContain(r); // r already owns its reduced segment
        // what r receives at hop h it sends at hop h + 1
        for (let h = 0; h < 2 * n - 3; h++) expect(ringSegment(left, h, n)).toBe(ringSegment(r, h + 1, n));
      }
    }
  });

  it('all-gather forwards block (r - t) at hop t', () => {
    const n = 4;
    for (let r = 0; r < n; r++) {
      const left = (r + n - 1) % n;
      const got = Array.from({ length: n - 1 }, (_, t) => gatherBlock(left, t, n));
      expect(new Set([...got, r]).size).toBe(n);
    }
  });
});
