import { afterEach, describe, expect, it } from 'vitest';
import { Communicator } from '../src/collectives/communicator.js';
import { RingError } from '../src/errors.js';
import { RingGroup } from '../src/group.js';
import { silentLogger } from '../src/logger.js';
import type { Link } from '../src/transport/link.js';
import { memoryLinkPair } from '../src/transport/memory.js';
import { withDeadline } from './helpers/reference.js';

/**
 * Who a timeout names, in one process (the real-process versions are in faults.test.ts and
 * netns.test.ts). A "stalled" rank here is one whose links carry nothing either way, as with a
 * SIGSTOPped process or a cut cable: its sockets stay open, it just goes silent.
 */

let groups: RingGroup[] = [];
afterEach(async () => {
  await withDeadline(Promise.all(groups.map((g) => g.shutdown().catch(() => {}))), 5_000, 'shutdown');
  groups = [];
});

/** A ring over memory links; rank `stalled` (if any) neither sends nor receives anything. */
function ring(timeouts: number[], stalled?: number): RingGroup[] {
  const n = timeouts.length;
  const lefts: Link[] = [];
  const rights: Link[] = [];
  for (let r = 0; r < n; r++) {
    const [toRight, fromLeft] = memoryLinkPair(r, (r + 1) % n);
    rights[r] = toRight;
    lefts[(r + 1) % n] = fromLeft;
  }
  if (stalled !== undefined) {
    for (const l of [lefts[stalled], rights[stalled]]) {
      const muted = l as unknown as { write(parts: Uint8Array[], done: () => void): void; deliver(m: Uint8Array): void };
      muted.write = (_parts, done) => setImmediate(done); // bytes leave (into a socket buffer) but never arrive
      muted.deliver = () => {}; // bytes never arrive
    }
  }
  groups = timeouts.map(
    (timeoutMs, r) =>
      new RingGroup(new Communicator(r, n, lefts[r], rights[r], { chunkBytes: 1024, maxInflight: 4, timeoutMs, logger: silentLogger }), {
        localRank: r,
        localSize: n,
      }),
  );
  return groups;
}

async function failures(ps: Promise<unknown>[]): Promise<RingError[]> {
  const settled = await withDeadline(Promise.allSettled(ps), 10_000, 'timeouts');
  return settled.map((s) => {
    expect(s.status).toBe('rejected');
    const e = (s as PromiseRejectedResult).reason as RingError;
    expect(e).toBeInstanceOf(RingError);
    return e;
  });
}

describe('a timeout names the stalled rank', () => {
  it.each([2, 0, 3])('N=4, rank %i stalled: every other rank fails naming it, the op and its sequence number', async (stalled) => {
    const gs = ring([400, 400, 400, 400], stalled);
    const t0 = Date.now();
    const live = gs.filter((g) => g.rank !== stalled);
    const errs = await failures(live.map((g) => g.allreduce(new Float32Array(5000), { name: 'w' })));
    const left = (stalled + 3) % 4;
    for (const [i, e] of errs.entries()) {
      expect(e.code, e.message).toBe('RING_ERR_TIMEOUT');
      expect(e.details).toMatchObject({ ranks: [stalled], op: 'allreduce', seq: 0 });
      expect(e.message).toContain(`rank ${left}: allreduce #0 'w' timed out after 400 ms: rank ${stalled} (right neighbour) has sent nothing for`);
      if (live[i].rank !== left) expect(e.message).toMatch(new RegExp(`^rank ${live[i].rank}: aborted because rank ${left} failed`));
    }
    // The timeout, plus at most GRACE_BEATS (6) heartbeats of 50 ms, plus scheduling slack.
    expect(Date.now() - t0).toBeLessThan(400 + 6 * 50 + 1000);
  });

  it("a late rank (alive, heartbeating) is reported as not having reached the operation, not as silent", async () => {
    const gs = ring([400, 400, 400]);
    const errs = await failures([gs[0].allreduce(new Float32Array(10)), gs[1].allreduce(new Float32Array(10))]);
    for (const e of errs) {
      expect(e.code).toBe('RING_ERR_TIMEOUT');
      expect(e.message).toMatch(/timed out after 400 ms: ranks 2 have not reached it/);
      expect(e.message).not.toContain('has sent nothing');
    }
  });

  it('ranks with different timeouts: a peer that beats slowly (1 s) is not mistaken for a silent one', async () => {
    // Rank 2 beats every 1000 ms (timeout 60 s); ranks 0 and 1 time out after 300 ms (beats every 38 ms).
    const gs = ring([300, 300, 60_000]);
    await new Promise((r) => setTimeout(r, 1100)); // rank 2's first heartbeat has announced its interval
    const errs = await failures([gs[0].allreduce(new Float32Array(10)), gs[1].allreduce(new Float32Array(10))]);
    for (const e of errs) {
      expect(e.message).toMatch(/ranks 2 have not reached it/);
      expect(e.details.ranks).toEqual([2]);
    }
  });
});
