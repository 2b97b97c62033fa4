import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { createLocalGroups, RingError } from '../src/index.js';
import { encodeControl, MAX_CONTROL_BYTES } from '../src/transport/wire.js';
import { MAX_MAP_ENTRIES } from '../src/transport/msgpack-check.js';
import { ringWithImpostor, type Impostor } from './helpers/impostor.js';
import { withDeadline } from './helpers/reference.js';

/**
 * Issue 14, row 11: a holder of the job token (so past the handshake), as rank 2 of a live
 * 3-rank ring, sends control messages that are costly to decode or come too often. Before the
 * fix, 200 heartbeats that were each a 1 MB map of 120,000 keys cost the rank 9.8 s of CPU and
 * 118 MB. Now: a map wider than MAX_MAP_ENTRIES is refused from its header, a control message over
 * MAX_CONTROL_BYTES before decoding, and heartbeats beyond one per 20 ms (and a burst) end the
 * link; each is RING_ERR_PROTOCOL naming rank 2 on the rank it reached, and the other is told.
 */

const COUNT = 64;

async function attacked(send: (i: Impostor) => void, expected: RegExp) {
  const logs: string[] = [];
  // Frames of 1 MiB, so that the links take messages of 1 MiB (and it is the new limits that act).
  const ring = await ringWithImpostor(logs, { chunkBytes: 1 << 20 });
  try {
    const ops = ring.groups.map((g) => g.allreduce(new Float32Array(COUNT).fill(g.rank + 1), { name: 'victim' }));
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    send(ring.impostor);
    const [r0, r1] = await withDeadline(Promise.allSettled(ops), 10_000, 'the ranks fail');
    const ms = Date.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    // Heartbeats go to the left: rank 1 hears the impostor's.
    expect(r1.status).toBe('rejected');
    const e = (r1 as PromiseRejectedResult).reason as RingError;
    expect(e).toBeInstanceOf(RingError);
    expect(e.code, e.message).toBe('RING_ERR_PROTOCOL');
    expect(e.message).toContain('rank 1: protocol error: rank 2 ');
    expect(e.message, e.message).toMatch(expected);
    expect(e.details).toMatchObject({ rank: 1, ranks: [2] });
    expect(r0.status).toBe('rejected');
    expect(((r0 as PromiseRejectedResult).reason as RingError).message).toMatch(/aborted because rank 1 failed: .*rank 2/);
    return { ms, cpuMs: (cpu.user + cpu.system) / 1000, message: e.message };
  } finally {
    await ring.close();
  }
}

describe('a holder of the job token, as rank 2 of a live ring', () => {
  const wideBeat = (keys: number) => {
    const o: Record<string, unknown> = { t: 'beat', rank: 2, everyMs: 1000 };
    for (let i = 0; i < keys; i++) o[`k${i}`] = 1;
    return Buffer.concat([Buffer.from([0]), new Packr({ useRecords: false, variableMapSize: true }).pack(o)]);
  };

  it.each([
    ['1 MB map of 120,000 keys (the issue\'s)', 120_000, new RegExp(`control message of \\d+ bytes from .*\\(at most ${MAX_CONTROL_BYTES}\\)`)],
    ['240 KB map of 30,000 keys (within the size limit)', 30_000, new RegExp(`a map of 30003 entries .*\\(at most ${MAX_MAP_ENTRIES}\\)`)],
  ])('200 heartbeats that are each a %s: the first ends the link, undecoded', async (what, keys, expected) => {
    const msg = wideBeat(keys);
    const r = await attacked((i) => {
      for (let k = 0; k < 200; k++) if (i.toRank1.readyState === i.toRank1.OPEN) i.toRank1.send(msg);
    }, expected);
    console.log(`[row 11] 200 heartbeats, each a ${what}: failed in ${r.ms} ms, ${r.cpuMs.toFixed(0)} ms of CPU in this process (the impostor's sending included): ${r.message}`);
    expect(r.cpuMs).toBeLessThan(2000);
  });

  it(`a control message over ${MAX_CONTROL_BYTES} bytes is refused before decoding`, async () => {
    const msg = encodeControl({ t: 'beat', rank: 2, everyMs: 1000, pad: 'x'.repeat(MAX_CONTROL_BYTES) });
    const r = await attacked((i) => i.toRank1.send(msg), new RegExp(`control message of ${msg.length} bytes from .*\\(at most ${MAX_CONTROL_BYTES}\\)`));
    console.log(`[row 11] a ${msg.length}-byte control message: ${r.message}`);
  });

  it('a flood of small heartbeats (5,000 at once) ends the link', async () => {
    const beat = encodeControl({ t: 'beat', rank: 2, everyMs: 20 });
    const r = await attacked((i) => {
      for (let k = 0; k < 5000; k++) i.toRank1.send(beat);
    }, /sent \d+ heartbeats in \d+ ms \(at most one per 20 ms\)/);
    console.log(`[row 11] 5,000 heartbeats at once: ${r.message}`);
  });
});

describe('a process that ran late is not judged by its own late timer', () => {
  it('3 ranks in one process, timeoutMs 160, its event loop blocked 600 ms mid-operation: exact results, no timeout', async () => {
    const groups = await createLocalGroups(3, { transport: 'ws', timeoutMs: 160 });
    try {
      for (let round = 0; round < 3; round++) {
        const pending = Promise.all(groups.map((g) => g.allreduce(new Float32Array(16).fill(g.rank + 1))));
        // Every rank's operation is pending and none can progress: the whole process is stalled,
        // as on a machine that gives it no CPU, well past the operations' deadline.
        const until = Date.now() + 600;
        while (Date.now() < until);
        for (const y of await pending) expect([...y]).toEqual(new Array(16).fill(6));
      }
    } finally {
      await Promise.all(groups.map((g) => g.shutdown()));
    }
  });
});

describe('the heartbeat bound leaves real rings alone', () => {
  it('3 ranks beating every 20 ms (timeoutMs 160) for 3 s, then exact results', async () => {
    const groups = await createLocalGroups(3, { transport: 'ws', timeoutMs: 160 });
    try {
      const t0 = Date.now();
      // Keep operations pending on and off so the ranks beat (and are heard) all the while.
      while (Date.now() - t0 < 3000) {
        const out = await Promise.all(groups.map((g) => g.allreduce(new Float32Array(16).fill(g.rank + 1))));
        for (const y of out) expect(y[0]).toBe(6);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await Promise.all(groups.map((g) => g.shutdown()));
    }
  });
});
