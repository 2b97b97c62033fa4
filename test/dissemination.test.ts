import { describe, expect, it } from 'vitest';
import {
  disseminationPeers,
  disseminationRounds,
  expectedFrom,
  inRun,
  roundSends,
  runNeeded,
} from '../src/collectives/comm/dissemination.js';
import { mod } from '../src/collectives/schedule.js';
import { prng } from './helpers/hostile.js';

/**
 * The direct route's schedule (src/collectives/comm/dissemination.ts) for N = 1..40 and R = 2..9:
 * run as the communicator runs it — a rank makes round k's sends as soon as its run is long
 * enough, messages arrive in any order — every rank ends with every origin exactly once, every
 * block is one the receiver expects from that sender, and a rank's links are exactly its peers.
 */
function simulate(n: number, radix: number, seed: number): { have: Set<number>[]; messages: number } {
  // Plain checks in the loops (an expect() per block costs seconds over the whole sweep).
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new Error(`N=${n} R=${radix}: ${what}`);
  };
  const rounds = disseminationRounds(n, radix);
  const have = Array.from({ length: n }, (_, r) => new Set([r]));
  const sent = new Array<number>(n).fill(0);
  const queue: Array<{ from: number; to: number; origins: number[] }> = [];
  const peers = Array.from({ length: n }, (_, r) => new Set(disseminationPeers(r, n, radix)));
  let messages = 0;
  const runLength = (r: number) => {
    let len = 0;
    while (len < n && have[r].has(mod(r + len, n))) len++;
    return len;
  };
  const advance = (r: number) => {
    while (sent[r] < rounds && runLength(r) >= runNeeded(n, radix, sent[r])) {
      for (const s of roundSends(r, n, radix, sent[r])) {
        const origins = Array.from({ length: s.count }, (_, i) => mod(s.first + i, n));
        check(peers[r].has(s.peer) && origins.every((o) => have[r].has(o)), `rank ${r} sends round ${sent[r]} to ${s.peer} what it has`);
        queue.push({ from: r, to: s.peer, origins });
      }
      sent[r]++;
    }
  };
  for (let r = 0; r < n; r++) advance(r);
  const rand = prng(seed);
  while (queue.length > 0) {
    const m = queue.splice(rand.int(queue.length), 1)[0];
    messages++;
    const want = expectedFrom(m.to, m.from, n, radix);
    check(want !== undefined && peers[m.to].has(m.from), `rank ${m.to} expects blocks from ${m.from}`);
    for (const o of m.origins) {
      check(inRun(want!, o, n), `rank ${m.to} expects origin ${o} from ${m.from}`);
      check(!have[m.to].has(o), `rank ${m.to} got origin ${o} twice`);
      have[m.to].add(o);
    }
    advance(m.to);
  }
  expect(sent.every((s) => s === rounds)).toBe(true);
  return { have, messages };
}

describe('dissemination schedule', () => {
  it('N = 1..40 x R = 2..9: every rank ends with every origin exactly once, each block expected', () => {
    for (let n = 1; n <= 40; n++) {
      for (let radix = 2; radix <= 9; radix++) {
        const { have } = simulate(n, radix, n * 100 + radix);
        for (let r = 0; r < n; r++) expect(have[r].size, `N=${n} R=${radix} rank ${r}`).toBe(n);
        expect(disseminationRounds(n, radix)).toBe(n <= 1 ? 0 : Math.ceil(Math.log(n) / Math.log(radix) - 1e-9));
      }
    }
  });

  it('R >= N is one round: every rank sends its own block straight to every other', () => {
    for (let n = 2; n <= 8; n++) {
      expect(disseminationRounds(n, 8)).toBe(1);
      expect(roundSends(0, n, 8, 0).map((s) => s.peer).sort((a, b) => a - b)).toEqual(Array.from({ length: n - 1 }, (_, i) => i + 1));
      expect(disseminationPeers(0, n, 8).length).toBe(n - 1);
    }
  });

  it('a rank links to at most 2(R-1) x rounds peers (N = 64, R = 8: 21 of 63; some it sends to also send to it)', () => {
    expect(disseminationRounds(64, 8)).toBe(2);
    expect(disseminationRounds(9, 8)).toBe(2);
    expect(disseminationPeers(5, 64, 8).length).toBe(21);
    expect(disseminationRounds(64, 2)).toBe(6);
  });

  it('a peer outside the schedule, or this rank itself, is expected to send nothing', () => {
    expect(expectedFrom(3, 3, 10, 2)).toBeUndefined();
    // N=10, R=2: offsets 1, 2, 4, 8; 3 is none of them.
    expect(expectedFrom(0, 3, 10, 2)).toBeUndefined();
    expect(expectedFrom(0, 8, 10, 2)).toEqual({ round: 3, peer: 8, first: 8, count: 2 });
  });
});
