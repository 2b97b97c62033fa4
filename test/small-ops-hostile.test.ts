import { afterEach, describe, expect, it } from 'vitest';
import { RingBarrier } from '../src/collectives/barrier.js';
import { Communicator } from '../src/collectives/communicator.js';
import type { DirectLinks } from '../src/collectives/comm/direct-route.js';
import { descriptor } from '../src/collectives/descriptor.js';
import { RingError } from '../src/errors.js';
import { silentLogger } from '../src/logger.js';
import { resolveOptions } from '../src/options.js';
import type { Link } from '../src/transport/link.js';
import { memoryLinkPair } from '../src/transport/memory.js';
import { withDeadline } from './helpers/reference.js';

/**
 * Hostile input on the direct route (src/collectives/comm/direct-route.ts), and a peer lost on it.
 * Ranks 0 and 1 are real communicators; rank 2 is this test, holding its ends of the ring links
 * and of the direct links that ranks 0 and 1 open to it. Whatever rank 2 sends on a direct link
 * that the schedule does not allow — another rank's descriptor, one twice, one far ahead, a
 * malformed one, a heartbeat, a data frame, a link it has no business opening — fails the
 * communicator with RING_ERR_PROTOCOL naming rank 2 on the rank it reached, and the abort fails
 * the other. A direct link that drops without a goodbye is RING_ERR_PEER_LOST naming rank 2.
 */

interface Trio {
  comms: Communicator[];
  /** Rank 2's end of the direct link from rank r, once r opened it; messages rank 2 got on it. */
  direct: Map<number, Link>;
  got: object[];
  /** Hands `link` to rank `to` as if rank `from` had opened it. */
  arrive(to: number, from: number, link: Link): void;
}

let trios: Trio[] = [];
afterEach(async () => {
  for (const t of trios) await Promise.all(t.comms.map((c) => c.shutdown().catch(() => {})));
  trios = [];
});

function trio(): Trio {
  const o = { ...resolveOptions({ rank: 0, size: 1, timeoutMs: 20_000, logger: silentLogger }, {}) };
  const got: object[] = [];
  const ignore = (l: Link) => l.setHandlers({ data: () => {}, control: (m: object) => got.push(m), validate: (m: object) => m, closed: () => {} });
  // Ring 0 -> 1 -> 2 -> 0: [sender's end, receiver's end].
  const [r0to1, r1from0] = memoryLinkPair(0, 1);
  const [r1to2, r2from1] = memoryLinkPair(1, 2);
  const [r2to0, r0from2] = memoryLinkPair(2, 0);
  ignore(r2from1);
  ignore(r2to0);
  const serve = new Map<number, (peer: number, link: Link) => void>();
  const direct = new Map<number, Link>();
  const arrive = (to: number, from: number, link: Link) => {
    if (to === 2) {
      ignore(link);
      direct.set(from, link);
    } else serve.get(to)!(from, link);
  };
  const links = (rank: number): DirectLinks => ({
    connect: async (peer) => {
      const [mine, theirs] = memoryLinkPair(rank, peer);
      setImmediate(() => arrive(peer, rank, theirs));
      return mine;
    },
    serve: (h) => void serve.set(rank, h),
  });
  const comms = [
    new Communicator(0, 3, r0from2, r0to1, o, { links: links(0), radix: 8 }),
    new Communicator(1, 3, r1from0, r1to2, o, { links: links(1), radix: 8 }),
  ];
  const t = { comms, direct, got, arrive };
  trios.push(t);
  return t;
}

const barrierDesc = descriptor('barrier');
const barriers = (t: Trio) => t.comms.map((c) => c.run(barrierDesc, new RingBarrier()));

async function linkFrom(t: Trio, rank: number): Promise<Link> {
  for (let i = 0; i < 100 && !t.direct.has(rank); i++) await new Promise((r) => setImmediate(r));
  return t.direct.get(rank)!;
}

/**
 * A barrier of the three ranks with rank 2 playing by the rules: its block on each of its direct
 * links (N = 3, radix 8: one round, straight to each). Returns rank 2's ends of the links.
 */
async function honestBarrier(t: Trio): Promise<{ to0: Link; to1: Link }> {
  const runs = barriers(t);
  const to0 = await linkFrom(t, 0);
  const to1 = await linkFrom(t, 1);
  to0.sendControl({ t: 'desc', seq: 0, origin: 2, d: barrierDesc });
  to1.sendControl({ t: 'desc', seq: 0, origin: 2, d: barrierDesc });
  await withDeadline(Promise.all(runs), 10_000, 'barrier');
  return { to0, to1 };
}

async function expectFailures(runs: Promise<unknown>[], code: string, first: RegExp) {
  const settled = await withDeadline(Promise.allSettled(runs), 10_000, code);
  const errs = settled.map((s, r) => {
    expect(s.status, `rank ${r}`).toBe('rejected');
    const e = (s as PromiseRejectedResult).reason as RingError;
    expect(e).toBeInstanceOf(RingError);
    expect(e.code, e.message).toBe(code);
    return e;
  });
  // Rank 0 saw it; rank 1 learnt it from rank 0's abort. Both name rank 2.
  expect(errs[0].message).toMatch(first);
  expect(errs[0].details.ranks).toEqual([2]);
  expect(errs[1].message).toMatch(/^rank 1: aborted because rank 0 failed: rank 0: /);
  expect(errs[1].details.ranks).toEqual([2]);
}

describe('hostile rank 2 on a direct link to rank 0', () => {
  it('a barrier of the two honest ranks waits for rank 2 only (the harness works)', async () => {
    const t = trio();
    await honestBarrier(t);
    // And rank 2 got both honest blocks, one from each, straight.
    expect(t.got.filter((m) => (m as { t: string }).t === 'desc').map((m) => (m as { origin: number }).origin).sort()).toEqual([0, 1]);
  });

  it.each([
    ['another rank\'s descriptor', [{ t: 'desc', seq: 0, origin: 1, d: barrierDesc }], /rank 2 sent rank 1's descriptor for #0 on a direct link, where it passes only ranks 2\.\.2's/],
    ['its own descriptor twice', [1, 1].map((seq) => ({ t: 'desc', seq, origin: 2, d: barrierDesc })), /rank 2 sent rank 2's descriptor for #1 twice/],
    ['a descriptor far ahead', [{ t: 'desc', seq: 5000, origin: 2, d: barrierDesc }], /rank 2 sent a descriptor for #5000, far ahead of this rank's #1/],
    ['a malformed descriptor', [{ t: 'desc', seq: 0, origin: 2, d: { ...barrierDesc, kind: 'teleport' } }], /rank 2 \(direct link\) broke the protocol: malformed 'desc' message/],
    ['a malformed envelope', [{ t: 'desc', seq: 0, origin: 2, d: barrierDesc, p: 'bytes?' }], /rank 2 \(direct link\) broke the protocol: .*inline payload/],
    ['a heartbeat', [{ t: 'beat', rank: 2, everyMs: 100 }], /rank 2 sent a 'beat' message on a direct link/],
    ['a goodbye in another rank\'s name', [{ t: 'bye', rank: 1 }], /rank 2 said goodbye as rank 1/],
  ])('%s: RING_ERR_PROTOCOL naming rank 2 on both ranks', async (_what, messages, message) => {
    const t = trio();
    const runs = barriers(t);
    const to0 = await linkFrom(t, 0);
    for (const m of messages) to0.sendControl(m);
    await expectFailures(runs, 'RING_ERR_PROTOCOL', new RegExp(`^rank 0: protocol error: ${message.source}`));
  });

  it('a data frame: RING_ERR_PROTOCOL naming rank 2', async () => {
    const t = trio();
    const runs = barriers(t);
    const to0 = await linkFrom(t, 0);
    to0.sendData({ seq: 0, step: 0, chunk: 0, codec: 0, scale: 1 }, new Uint8Array(8), () => {});
    await expectFailures(runs, 'RING_ERR_PROTOCOL', /^rank 0: protocol error: rank 2 sent a data frame on a direct link/);
  });

  it('a direct link opened the wrong way (the lower rank opens them): RING_ERR_PROTOCOL naming rank 2', async () => {
    const t = trio();
    const runs = barriers(t);
    await linkFrom(t, 0);
    const [, theirs] = memoryLinkPair(2, 0);
    t.arrive(0, 2, theirs);
    await expectFailures(runs, 'RING_ERR_PROTOCOL', /^rank 0: protocol error: rank 2 opened a direct link to rank 0, which exchanges nothing with it that way/);
  });
});

describe('a peer lost on a direct link', () => {
  it('dropped without a goodbye while an operation waits: RING_ERR_PEER_LOST naming rank 2 on both ranks', async () => {
    const t = trio();
    const runs = barriers(t);
    (await linkFrom(t, 0)).close();
    await expectFailures(runs, 'RING_ERR_PEER_LOST', /^rank 0: rank 2 \(direct link\) is gone \(connection closed by the peer\) while barrier #0 was pending/);
  });

  it('closed after its goodbye: nothing fails (it needs nothing more)', async () => {
    const t = trio();
    const { to0 } = await honestBarrier(t);
    to0.sendControl({ t: 'bye', rank: 2 });
    to0.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(t.comms.map((c) => c.error)).toEqual([undefined, undefined]);
  });
});
