import { afterEach, describe, expect, it } from 'vitest';
import { createLocalGroups, kernels, RingError, type RingGroup } from '../src/index.js';
import { peerMemory } from '../src/kernels/index.js';
import { EAGER_BYTES, EAGER_CREDIT } from '../src/p2p/messages.js';
import { firstDiff, withDeadline } from './helpers/reference.js';

/**
 * Point-to-point send/recv and alltoall, on in-process memory links and on real WebSockets
 * (127.0.0.1, with the handshake, and shared memory between the ranks of this one host). Data
 * are integer-valued and every result is compared exactly. Small chunks make large sends span
 * many frames.
 */
const CHUNK = 64 * 1024;
const pattern = (ctor: any, n: number, seed: number) => ctor.from({ length: n }, (_: unknown, i: number) => (seed * 7919 + i) % 251);
const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as RingError);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DEADLINE = 30_000;

type Transport = 'memory' | 'ws' | 'ws-sockets';
let open: RingGroup[] = [];
/** 'ws-sockets': WebSockets without shared memory, as between hosts (payloads land from the socket). */
async function groups(n: number, transport: Transport, timeoutMs = 60_000): Promise<RingGroup[]> {
  const sockets = transport === 'ws-sockets';
  open = await createLocalGroups(n, { transport: sockets ? 'ws' : transport, chunkBytes: CHUNK, timeoutMs, sharedMemory: !sockets });
  return open;
}
afterEach(async () => {
  await Promise.all(open.map((g) => g.shutdown().catch(() => {})));
  open = [];
});

describe.each(['memory', 'ws', 'ws-sockets'] as const)('send/recv over %s', (transport) => {
  const sizes = transport === 'memory' ? [2, 3, 5] : transport === 'ws' ? [2, 4] : [3];

  it.each(sizes)('ring shift both ways with tags, every size of payload (N=%i)', async (n) => {
    const gs = await groups(n, transport);
    // 0 bytes, eager, at the eager limit, one chunk + 1, several chunks (rendezvous).
    for (const count of [0, 1, 7, EAGER_BYTES / 4, CHUNK / 4 + 1, 300_007]) {
      const res = await withDeadline(
        Promise.all(
          gs.map(async (g) => {
            const r = g.rank;
            const right = (r + 1) % n;
            const left = (r + n - 1) % n;
            const [, fromLeft, , fromRight] = await Promise.all([
              g.send(pattern(Float32Array, count, r), { dst: right, tag: 5 }),
              g.recv(new Float32Array(count), { src: left, tag: 5 }),
              g.send(pattern(Int32Array, count, 100 + r), { dst: left, tag: 6 }),
              g.recv(new Int32Array(count), { src: right, tag: 6 }),
            ]);
            return { fromLeft, fromRight };
          }),
        ),
        DEADLINE,
        `shift N=${n} count=${count}`,
      );
      res.forEach(({ fromLeft, fromRight }, r) => {
        expect(firstDiff(fromLeft, pattern(Float32Array, count, (r + n - 1) % n)), `count ${count} rank ${r}`).toBeUndefined();
        expect(firstDiff(fromRight, pattern(Int32Array, count, 100 + ((r + 1) % n)))).toBeUndefined();
      });
    }
    // Over sockets, the frames of large sends were written by the socket reader straight into the recv's array.
    if (transport === 'ws-sockets') for (const g of gs) expect((g as any).fabric.p2p.received.landedFrames).toBeGreaterThan(0);
  });

  it('many concurrent pairs: every rank sends to every other on three tags at once', async () => {
    const n = transport === 'memory' ? 5 : 4;
    const gs = await groups(n, transport);
    const count = (s: number, d: number, t: number) => [3, 20_000, 70_001][(s + d + t) % 3];
    const got = await withDeadline(
      Promise.all(
        gs.map(async (g) => {
          const ops: Promise<unknown>[] = [];
          const ins: Record<string, Float64Array> = {};
          for (let p = 0; p < n; p++) {
            if (p === g.rank) continue;
            for (const t of [0, 1, 2]) {
              ops.push(g.send(pattern(Float64Array, count(g.rank, p, t), g.rank * 10 + t), { dst: p, tag: t }));
              const into = new Float64Array(count(p, g.rank, t));
              ins[`${p}/${t}`] = into;
              ops.push(g.recv(into, { src: p, tag: t }));
            }
          }
          await Promise.all(ops);
          return ins;
        }),
      ),
      DEADLINE,
      'all pairs',
    );
    got.forEach((ins, r) => {
      for (const [k, v] of Object.entries(ins)) {
        const [p, t] = k.split('/').map(Number);
        expect(firstDiff(v, pattern(Float64Array, count(p, r, t), p * 10 + t)), `${p}->${r} tag ${t}`).toBeUndefined();
      }
    });
  });

  it('links to other ranks are opened on first use only, and reused', async () => {
    const gs = await groups(3, transport);
    const links = (g: RingGroup) => (g as any).fabric.mesh.links.size as number;
    // Over ws the mesh also holds the ring's own two links per rank (same port, channel 'ring').
    const ring = transport === 'memory' ? 0 : 2;
    await Promise.all(gs.map((g) => g.allreduce(Float32Array.of(1, 2, 3))));
    expect(gs.map(links)).toEqual([ring, ring, ring]);
    for (let round = 0; round < 3; round++) {
      await Promise.all([gs[0].send(Float32Array.of(round), { dst: 2 }), gs[2].recv(new Float32Array(1), { src: 0 })]);
    }
    // One link, made by the sender and accepted by the receiver; rank 1 has none more.
    expect(gs.map(links)).toEqual([ring + 1, ring, ring + 1]);
  });

  it('a recv posted long before its send, and a send long before its recv, small and large', async () => {
    const [a, b] = await groups(2, transport);
    for (const count of [10, 200_000]) {
      const early = b.recv(new Uint16Array(count), { src: 0, tag: 1 });
      await sleep(50);
      await Promise.all([a.send(pattern(Uint16Array, count, 1), { dst: 1, tag: 1 }), early]);
      expect(firstDiff(await early, pattern(Uint16Array, count, 1))).toBeUndefined();
      let sent = false;
      const send = a.send(pattern(Uint16Array, count, 2), { dst: 1, tag: 1 }).then(() => (sent = true));
      await sleep(50);
      expect(sent).toBe(false); // a send resolves only once a recv took it
      const late = await b.recv(new Uint16Array(count), { src: 0, tag: 1 });
      await send;
      expect(firstDiff(late, pattern(Uint16Array, count, 2))).toBeUndefined();
    }
  });

  it('tags match out of order; one tag matches in call order', async () => {
    const [a, b] = await groups(2, transport);
    const sends = Promise.all([
      a.send(Int8Array.of(1), { dst: 1, tag: 1 }),
      a.send(Int8Array.of(2), { dst: 1, tag: 2 }),
      a.send(pattern(Int8Array, 100_000, 3), { dst: 1, tag: 3 }),
      a.send(pattern(Int8Array, 100_000, 4), { dst: 1, tag: 3 }),
      a.send(Int8Array.of(5), { dst: 1, tag: 3 }),
    ]);
    const t2 = await b.recv(new Int8Array(1), { src: 0, tag: 2 });
    const t3 = await Promise.all([b.recv(new Int8Array(100_000), { src: 0, tag: 3 }), b.recv(new Int8Array(100_000), { src: 0, tag: 3 })]);
    const t3c = await b.recv(new Int8Array(1), { src: 0, tag: 3 });
    const t1 = await b.recv(new Int8Array(1), { src: 0, tag: 1 });
    await sends;
    expect([t1[0], t2[0], t3c[0]]).toEqual([1, 2, 5]);
    expect(firstDiff(t3[0], pattern(Int8Array, 100_000, 3))).toBeUndefined();
    expect(firstDiff(t3[1], pattern(Int8Array, 100_000, 4))).toBeUndefined();
  });

  it('a length or dtype mismatch fails on both ranks, naming both and the tag', async () => {
    const [a, b] = await groups(2, transport);
    for (const [sent, recvd, field] of [
      [new Float32Array(4), new Float32Array(5), 'count'],
      [new Float32Array(100_000), new Float32Array(99_999), 'count'],
      [new Float32Array(4), new Int32Array(4), 'dtype'],
    ] as const) {
      const [es, er] = await Promise.all([errorOf(a.send(sent, { dst: 1, tag: 7 })), errorOf(b.recv(recvd, { src: 0, tag: 7 }))]);
      for (const e of [es, er]) {
        expect(e?.code).toBe('RING_ERR_MISMATCH');
        expect(e?.details.field).toBe(field);
        expect(e?.message).toMatch(/rank 0 sends .* but rank 1 receives/);
        expect(e?.message).toMatch(/tag 7/);
      }
      expect(es!.message).toMatch(/^rank 0: send to rank 1/);
      expect(er!.message).toMatch(/^rank 1: recv from rank 0/);
    }
    // Both sides go on working.
    const [, ok] = await Promise.all([a.send(Float32Array.of(9), { dst: 1 }), b.recv(new Float32Array(1), { src: 0 })]);
    expect(ok[0]).toBe(9);
  });

  it('bad arguments are RING_ERR_INVALID_ARG naming the option', async () => {
    const [a] = await groups(3, transport);
    const cases: Array<[() => Promise<unknown>, RegExp]> = [
      [() => a.send(new Float32Array(1), { dst: 3 }), /options\.dst must be an integer rank in 0\.\.2, got 3/],
      [() => a.send(new Float32Array(1), { dst: -1 }), /options\.dst/],
      [() => a.send(new Float32Array(1), { dst: 0 }), /options\.dst is this rank itself/],
      [() => a.recv(new Float32Array(1), { src: 1.5 }), /options\.src/],
      [() => a.recv(new Float32Array(1), {} as never), /options\.src/],
      [() => a.send(new Float32Array(1), { dst: 1, tag: -2 }), /options\.tag must be a non-negative integer/],
      [() => a.send([1, 2] as never, { dst: 1 }), /send\(x\): x must be a Float32Array/],
      [() => a.alltoall(new Float32Array(4)), /options\.splits is not given and x\.length \(4\) is not a multiple of the group size \(3\)/],
      [() => a.alltoall(new Float32Array(4), { splits: [1, 1] }), /options\.splits must be an array of 3/],
      [() => a.alltoall(new Float32Array(4), { splits: [1, 1, 1] }), /sum to 3, but x has 4/],
      [() => a.alltoall(new Float32Array(4), { splits: [1, -1, 4] }), /options\.splits\[1\]/],
      [() => a.newGroup([0, 3]), /newGroup\(ranks\): 3 is not a rank in 0\.\.2/],
      [() => a.newGroup([1, 1]), /rank 1 is listed twice/],
      [() => a.newGroup([]), /non-empty array/],
    ];
    for (const [call, msg] of cases) {
      let e: RingError | undefined;
      try {
        await call();
      } catch (err) {
        e = err as RingError;
      }
      expect(e?.code, String(msg)).toBe('RING_ERR_INVALID_ARG');
      expect(e?.message).toMatch(msg);
    }
  });

  it('a recv nobody sends, and a send nobody receives, time out naming the peer and tag', async () => {
    const [a, b] = await groups(2, transport, 300);
    const [er, es] = await Promise.all([errorOf(b.recv(new Float32Array(3), { src: 0, tag: 11 })), errorOf(a.send(new Float32Array(3), { dst: 1, tag: 12 }))]);
    expect(er?.code).toBe('RING_ERR_TIMEOUT');
    expect(er?.message).toMatch(/^rank 1: recv from rank 0 \(tag 11\) timed out after 300 ms: rank 0 has sent nothing that matches it/);
    expect(er?.details.ranks).toEqual([0]);
    expect(es?.code).toBe('RING_ERR_TIMEOUT');
    expect(es?.message).toMatch(/^rank 0: send to rank 1 \(tag 12\) timed out after 300 ms: rank 1 has not posted a matching recv/);
  });

  it('a send that timed out is not taken by a recv posted later (its memory is the caller\'s again)', async () => {
    const [a, b] = await groups(2, transport, 300);
    for (const count of [10, 100_000]) {
      const e = await errorOf(a.send(pattern(Float64Array, count, 1), { dst: 1, tag: 21 }));
      expect(e?.code).toBe('RING_ERR_TIMEOUT');
      // The recv comes too late for that send: it waits for a new one instead of taking the old.
      const late = b.recv(new Float64Array(count), { src: 0, tag: 21 });
      await sleep(50);
      const [, got] = await Promise.all([a.send(pattern(Float64Array, count, 2), { dst: 1, tag: 21 }), late]);
      expect(firstDiff(got, pattern(Float64Array, count, 2))).toBeUndefined();
    }
    expect((b as any).fabric.p2p.held).toEqual({ messages: 0, bytes: 0 });
  });

  it('unmatched data does not pile up: beyond the credit, sends wait on the sender', async () => {
    const [a, b] = await groups(2, transport);
    const small = 40; // 40 x 64 KiB eager-size sends = 2.5 MiB, more than the 1 MiB credit
    const sends = [
      ...Array.from({ length: small }, (_, i) => a.send(pattern(Uint8Array, EAGER_BYTES, i), { dst: 1, tag: 1 })),
      ...Array.from({ length: 4 }, (_, i) => a.send(pattern(Uint8Array, 4 << 20, 50 + i), { dst: 1, tag: 2 })),
    ];
    await sleep(200);
    const held = (b as any).fabric.p2p.held as { messages: number; bytes: number };
    expect(held.bytes).toBeLessThanOrEqual(EAGER_CREDIT);
    expect(held.messages).toBe(small + 4); // announced, but the large ones moved no data
    for (let i = 0; i < small; i++) expect(firstDiff(await b.recv(new Uint8Array(EAGER_BYTES), { src: 0, tag: 1 }), pattern(Uint8Array, EAGER_BYTES, i))).toBeUndefined();
    for (let i = 0; i < 4; i++) expect(firstDiff(await b.recv(new Uint8Array(4 << 20), { src: 0, tag: 2 }), pattern(Uint8Array, 4 << 20, 50 + i))).toBeUndefined();
    await Promise.all(sends);
  });

  it('a rank that shuts down fails what its peers still wait for from it, naming it', async () => {
    const [a, b, c] = await groups(3, transport);
    // Links exist once the pairs have talked (a rank that never did is caught by the world ring
    // when its process dies: see p2p-process.test.ts).
    await Promise.all([c.send(Float32Array.of(1), { dst: 0 }), a.recv(new Float32Array(1), { src: 2 })]);
    await Promise.all([b.send(Float32Array.of(1), { dst: 2 }), c.recv(new Float32Array(1), { src: 1 })]);
    const waiting = errorOf(a.recv(new Float32Array(100_000), { src: 2, tag: 0 }));
    const sending = errorOf(b.send(new Float32Array(100_000), { dst: 2, tag: 0 }));
    await sleep(100);
    await c.shutdown();
    const [e1, e2] = await withDeadline(Promise.all([waiting, sending]), 10_000, 'peer loss');
    for (const e of [e1, e2]) {
      expect(['RING_ERR_PEER_LOST', 'RING_ERR_SHUTDOWN']).toContain(e?.code);
      expect(e?.message).toMatch(/rank 2/);
    }
  });
});

describe.each(['memory', 'ws', 'ws-sockets'] as const)('alltoall over %s', (transport) => {
  const sizes = transport === 'memory' ? [1, 2, 3, 5] : transport === 'ws' ? [1, 2, 4] : [3];

  it.each(sizes)('uneven and zero splits, small and large, every rank exact (N=%i)', async (n) => {
    const gs = await groups(n, transport);
    // splits[s][d]: what s sends d. Rounds: all zero, uneven with zeros, equal default, large.
    const rounds: Array<(s: number, d: number) => number> = [
      () => 0,
      (s, d) => ((s * 3 + d * 5) % 4 === 0 ? 0 : (s + 2 * d) % 7),
      () => 3,
      (s, d) => ((s + d) % 3 === 0 ? 0 : 40_000 + s * 1000 + d),
    ];
    for (const [k, split] of rounds.entries()) {
      const res = await withDeadline(
        Promise.all(
          gs.map((g) => {
            const s = g.rank;
            const mine = Array.from({ length: n }, (_, d) => split(s, d));
            const x = Int32Array.from(mine.flatMap((len, d) => Array.from({ length: len }, (_, i) => s * 1_000_000 + d * 100_000 + i)));
            return g.alltoall(x, k === 2 ? {} : { splits: mine, name: `round ${k}` });
          }),
        ),
        DEADLINE,
        `alltoall N=${n} round ${k}`,
      );
      res.forEach(({ data, splits }, d) => {
        expect(splits).toEqual(Array.from({ length: n }, (_, s) => split(s, d)));
        const want = Int32Array.from(splits.flatMap((len, s) => Array.from({ length: len }, (_, i) => s * 1_000_000 + d * 100_000 + i)));
        expect(data).toBeInstanceOf(Int32Array);
        expect(firstDiff(data, want), `round ${k} rank ${d}`).toBeUndefined();
      });
    }
  });

  it('options.into receives in place; a wrong length fails that rank alone, after the exchange', async () => {
    const gs = await groups(3, transport);
    const big = 30_000; // per destination: large enough to go rank to rank
    const into = gs.map(() => new Float32Array(3 * big));
    const res = await Promise.all(gs.map((g, r) => g.alltoall(pattern(Float32Array, 3 * big, r), { into: into[r] })));
    res.forEach(({ data }, r) => {
      expect(data).toBe(into[r]);
      const want = Float32Array.from([0, 1, 2].flatMap((s) => Array.from(pattern(Float32Array, 3 * big, s).subarray(r * big, (r + 1) * big))));
      expect(firstDiff(data, want)).toBeUndefined();
    });
    const outcomes = await Promise.all(gs.map((g, r) => errorOf(g.alltoall(pattern(Float32Array, 3 * big, r), { into: new Float32Array(r === 1 ? 5 : 3 * big) }))));
    expect(outcomes[0]).toBeUndefined();
    expect(outcomes[2]).toBeUndefined();
    expect(outcomes[1]?.code).toBe('RING_ERR_INVALID_ARG');
    expect(outcomes[1]?.message).toMatch(/alltoall: options\.into has 5 elements, but 90000 arrive here/);
    const wrongType = await errorOf((async () => gs[0].alltoall(new Float32Array(3), { into: new Int32Array(3) as never }))());
    expect(wrongType?.message).toMatch(/options\.into must be a Float32Array like x, got Int32Array/);
  });

  it('ranks that disagree on the dtype or name get RING_ERR_MISMATCH on every rank', async () => {
    const gs = await groups(3, transport);
    const errs = await Promise.all(gs.map((g) => errorOf(g.alltoall(g.rank === 1 ? new Float32Array(3) : new Int32Array(3)))));
    for (const e of errs) expect(e?.code).toBe('RING_ERR_MISMATCH');
    const ok = await Promise.all(gs.map((g) => g.alltoall(Float32Array.of(g.rank, g.rank, g.rank))));
    expect(Array.from(ok[2].data)).toEqual([0, 1, 2]);
  });
});

describe.each(['memory', 'ws'] as const)('process groups over %s', (transport) => {
  it('disjoint groups all-reduce at the same time as the world; members get group ranks, others null', async () => {
    const gs = await groups(4, transport);
    const subs = await Promise.all(gs.map((g) => g.newGroup([0, 1])));
    expect(subs.map((s) => s?.rank() ?? null)).toEqual([0, 1, null, null]);
    const evens = await Promise.all(gs.map((g) => g.newGroup([2, 0])));
    expect(evens.map((s) => (s ? [s.rank(), s.size(), s.ranks()] : null))).toEqual([[0, 2, [0, 2]], null, [1, 2, [0, 2]], null]);
    const odds = await Promise.all(gs.map((g) => g.newGroup([1, 3])));
    const big = 500_003;
    const results = await withDeadline(
      Promise.all(
        gs.map(async (g, r) => {
          const sub = (evens[r] ?? odds[r])!;
          const [world, group] = await Promise.all([
            g.allreduce(pattern(Float64Array, big, r)),
            sub.allreduce(pattern(Float64Array, big, 10 + r)),
          ]);
          return { world, group };
        }),
      ),
      DEADLINE,
      'groups + world',
    );
    const sum = (ranks: number[], seed: number) => {
      const out = new Float64Array(big);
      for (const r of ranks) {
        const p = pattern(Float64Array, big, seed + r);
        for (let i = 0; i < big; i++) out[i] += p[i];
      }
      return out;
    };
    const world = sum([0, 1, 2, 3], 0);
    results.forEach(({ world: w, group }, r) => {
      expect(firstDiff(w, world)).toBeUndefined();
      expect(firstDiff(group, sum(r % 2 === 0 ? [0, 2] : [1, 3], 10))).toBeUndefined();
    });
  });

  it('overlapping groups run collectives, send/recv and alltoall in their own numbering, concurrently', async () => {
    const gs = await groups(4, transport);
    const a = await Promise.all(gs.map((g) => g.newGroup([0, 1, 2])));
    const b = await Promise.all(gs.map((g) => g.newGroup([1, 2, 3])));
    const out = await withDeadline(
      Promise.all(
        gs.map(async (g, r) => {
          const jobs: Promise<unknown>[] = [g.allreduce(Int32Array.of(r, 1))];
          for (const grp of [a[r], b[r]]) {
            if (!grp) continue;
            const n = grp.size();
            jobs.push(grp.allreduce(Int32Array.of(r, 1)));
            jobs.push(grp.send(Int32Array.of(1000 * r + grp.rank()), { dst: (grp.rank() + 1) % n, tag: 4 }));
            jobs.push(grp.recv(new Int32Array(1), { src: (grp.rank() + n - 1) % n, tag: 4 }));
            jobs.push(grp.alltoall(Int32Array.of(r * 10, r * 10 + 1, r * 10 + 2)));
          }
          return Promise.all(jobs);
        }),
      ),
      DEADLINE,
      'overlapping groups',
    );
    expect(Array.from(out[0][0] as Int32Array)).toEqual([6, 4]);
    // Group a = world ranks 0,1,2 (group ranks 0,1,2); b = 1,2,3 (group ranks 0,1,2).
    expect(Array.from(out[0][1] as Int32Array)).toEqual([3, 3]);
    expect(Array.from((out[0][3] as Int32Array))).toEqual([2002]); // from a's rank 2 = world 2
    expect(Array.from((out[0][4] as { data: Int32Array }).data)).toEqual([0, 10, 20]);
    expect(Array.from(out[3][1] as Int32Array)).toEqual([6, 3]);
    expect(Array.from((out[3][3] as Int32Array))).toEqual([2001]); // b's rank 1 = world 2
    expect(Array.from((out[3][4] as { data: Int32Array }).data)).toEqual([12, 22, 32]);
  });

  it('a group does not wait for another: one group completes while the other still waits for a member', async () => {
    const gs = await groups(4, transport);
    const a = await Promise.all(gs.map((g) => g.newGroup([0, 1])));
    const b = await Promise.all(gs.map((g) => g.newGroup([2, 3])));
    let bDone = false;
    const bFirst = b[2]!.allreduce(Int32Array.of(2)).then((x) => ((bDone = true), x));
    // Group a (and the world) finish while group b's rank 3 has not called yet.
    const [a0, a1] = await withDeadline(Promise.all([a[0]!.allreduce(Int32Array.of(5)), a[1]!.allreduce(Int32Array.of(6))]), DEADLINE, 'group a');
    const world = await withDeadline(Promise.all(gs.map((g) => g.allreduce(Int32Array.of(1)))), DEADLINE, 'world');
    expect([a0[0], a1[0], world[0][0], bDone]).toEqual([11, 11, 4, false]);
    const [b2, b3] = await withDeadline(Promise.all([bFirst, b[3]!.allreduce(Int32Array.of(3))]), DEADLINE, 'group b');
    expect([b2[0], b3[0]]).toEqual([5, 5]);
  });

  it('a rank outside a group is refused, and lists that differ between ranks are a mismatch', async () => {
    const gs = await groups(3, transport);
    const sub = await Promise.all(gs.map((g) => g.newGroup([0, 2])));
    const e = await errorOf((async () => sub[0]!.send(Float32Array.of(1), { dst: 2 }))());
    expect(e?.code).toBe('RING_ERR_INVALID_ARG');
    expect(e?.message).toMatch(/options\.dst must be an integer rank in 0\.\.1, got 2/);
    const errs = await Promise.all(gs.map((g) => errorOf(g.newGroup(g.rank === 1 ? [0, 1] : [0, 2]))));
    for (const x of errs) {
      expect(x?.code).toBe('RING_ERR_MISMATCH');
      expect(x?.message).toMatch(/newGroup \[0,1\]/);
    }
  });
});

describe('large sends between ranks of one host', () => {
  const native = (kernels as { nativeError?: string }).nativeError === undefined && peerMemory !== undefined;

  it.skipIf(!native)('peerRead copies out of a process, and says why it cannot', () => {
    const src = Uint8Array.from({ length: 1 << 20 }, (_, i) => i % 253);
    const into = new Uint8Array(src.length);
    expect(peerMemory!.read(process.pid, peerMemory!.addressOf(src), into)).toBe(src.length);
    expect(firstDiff(into, src)).toBeUndefined();
    expect(() => peerMemory!.read(process.pid, 8, new Uint8Array(16))).toThrow(/process_vm_readv: Bad address/);
    expect(() => peerMemory!.read(0x3fffffff, peerMemory!.addressOf(src), new Uint8Array(16))).toThrow(/process_vm_readv: No such process/);
    expect(() => peerMemory!.read(-1, 1, new Uint8Array(1))).toThrow(/positive integers/);
  });

  it.skipIf(!native)('are copied once, straight out of the sender; where that fails, through the slots, exact either way', async () => {
    const logs: string[] = [];
    open = await createLocalGroups(2, { transport: 'ws', chunkBytes: CHUNK, logger: { info: (m) => logs.push(m), warn: (m) => logs.push(m) } });
    const [a, b] = open;
    const big = 300_007;
    const [, got] = await Promise.all([a.send(pattern(Float64Array, big, 1), { dst: 1 }), b.recv(new Float64Array(big), { src: 0 })]);
    expect(firstDiff(got, pattern(Float64Array, big, 1))).toBeUndefined();
    const p2p = (g: RingGroup) => (g as any).fabric.p2p;
    expect(p2p(b).received).toEqual({ eager: 0, streamed: 0, singleCopy: 1, landedFrames: 0 });
    // A pid that names no process of this job: the read fails, the send streams through slots.
    (b as any).fabric.mesh.pidOf = () => 0x3fffffff;
    const [, again] = await Promise.all([a.send(pattern(Float64Array, big, 2), { dst: 1 }), b.recv(new Float64Array(big), { src: 0 })]);
    expect(firstDiff(again, pattern(Float64Array, big, 2))).toBeUndefined();
    expect(p2p(b).received).toMatchObject({ eager: 0, streamed: 1, singleCopy: 1 });
    expect(logs.join('\n')).toMatch(/rank 1: large sends from rank 0 go through shared-memory slots: peerRead: process_vm_readv: No such process/);
  });
});
