import { describe, expect, it } from 'vitest';
import { decide, type GroupMeta } from '../src/engine/plan.js';

const g = (names: Array<[string, number[]]>, extra: Partial<GroupMeta> = {}): GroupMeta => ({
  tensors: names.map(([name, shape]) => ({ name, shape })),
  op: 'average',
  compression: 'none',
  prescale: 1,
  postscale: 1,
  ...extra,
});

describe('negotiation (decide)', () => {
  it('matches groups by tensor names whatever the submission order; rank 0 orders execution', () => {
    const A = g([['a', [2]]]);
    const B = g([['b', [3]]]);
    const d = decide([[A, B], [B, A], [A, B]]);
    expect(d.errors).toEqual([]);
    expect(d.matched).toEqual([
      [0, 1, 0],
      [1, 0, 1],
    ]);
  });

  it('waits for groups not yet submitted everywhere', () => {
    const A = g([['a', [2]]]);
    const B = g([['b', [3]]]);
    expect(decide([[A, B], [A]])).toEqual({ matched: [[0, 0]], errors: [] });
    expect(decide([[A], []])).toEqual({ matched: [], errors: [] });
  });

  it('the same names submitted twice (a fast rank one step ahead) match first-come first-served', () => {
    const A = g([['a', [2]]]);
    expect(decide([[A, A], [A]]).matched).toEqual([[0, 0]]);
  });

  it('an extra tensor on one rank is a mismatch naming it and the ranks', () => {
    const d = decide([[g([['w', [4]], ['b', [4]]])], [g([['w', [4]], ['b', [4]], ['x/kernel', [4, 4]]])]]);
    expect(d.matched).toEqual([]);
    expect(d.errors).toEqual([
      { indices: [0, 0], field: 'tensors', ranks: [1], message: "tensor 'x/kernel' is submitted by rank 1 but not by rank 0" },
    ]);
  });

  it('shape, op and scaling differences', () => {
    expect(decide([[g([['w', [4, 3]]])], [g([['w', [4, 3]]])], [g([['w', [4, 5]]])]]).errors[0]).toMatchObject({
      field: 'shape',
      ranks: [2],
      message: "tensor 'w' has different shapes: ranks 0,1: [4,3]; rank 2: [4,5] (shape)",
    });
    expect(decide([[g([['w', [1]]])], [g([['w', [1]]], { op: 'sum' })]]).errors[0]).toMatchObject({ field: 'op', ranks: [1] });
    expect(decide([[g([['w', [1]]])], [g([['w', [1]]], { prescale: 0.5 })]]).errors[0]).toMatchObject({ field: 'prescale' });
  });
});
