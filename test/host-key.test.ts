import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLocalGroups, type RingGroup } from '../src/index.js';
import { sharedMemoryMap } from '../src/kernels/index.js';
import type { Logger } from '../src/logger.js';
import type { Link } from '../src/transport/link.js';
import { LinkMesh } from '../src/transport/mesh.js';
import type { Listener } from '../src/transport/transport.js';
import { WsTransport } from '../src/transport/ws/transport.js';
import { keys, resetKeys } from './helpers/machine-keys.js';
import { expected, firstDiff, input, withDeadline } from './helpers/reference.js';

/**
 * Shared memory only between ranks of the same host key (RankRecord.machine, from machineKey():
 * boot id and network namespace). Network namespaces of one machine share /dev/shm, so without
 * this the offer would succeed between emulated hosts. Here the keys are made to differ inside
 * one process: for the mesh's links through the addresses the rank table gives it, for the ring's
 * links by machineKey() itself (mocked by helpers/machine-keys.ts: one key of `keys.next` per
 * call).
 */

vi.mock('../src/rendezvous/address.js', async (original) => (await import('./helpers/machine-keys.js')).mockAddress(await original()));

const hasShm = sharedMemoryMap !== undefined;

let cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  await Promise.all(cleanup.map((f) => f().catch(() => {})));
  cleanup = [];
  resetKeys();
});

/** Two ranks' meshes over real WebSockets on 127.0.0.1; each sees the other on `sameHost` (or not). */
async function twoMeshes(sameHost: boolean) {
  const token = randomBytes(16).toString('hex');
  const lines: string[][] = [[], []];
  const meshes: LinkMesh[] = [];
  const listeners: Listener[] = [];
  for (const rank of [0, 1]) {
    const logger: Logger = { info: (m) => lines[rank].push(m), warn: (m) => lines[rank].push(`warning: ${m}`) };
    const transport = new WsTransport({ rank, token, host: '127.0.0.1', maxPayload: (1 << 20) + 8192, logger });
    const o = { sharedMemory: true, maxInflight: 4, chunkBytes: 1 << 20, startTimeoutMs: 10_000, logger, verbose: true };
    const mesh = new LinkMesh(rank, 2, transport, o);
    meshes.push(mesh);
    listeners.push(await transport.listen(mesh));
    cleanup.push(() => mesh.close(), () => listeners[rank].close());
  }
  for (const mesh of meshes) mesh.setAddresses(listeners.map((l) => ({ ...l.address, sameHost })));
  return { meshes, lines };
}

/** Until `lines` holds a line matching `re` (the accepting side's set-up finishes on its own). */
async function lineMatching(lines: string[], re: RegExp): Promise<string> {
  const t0 = Date.now();
  for (;;) {
    const l = lines.find((x) => re.test(x));
    if (l) return l;
    if (Date.now() - t0 > 10_000) throw new Error(`no line matching ${re} within 10 s; got:\n${lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.skipIf(!hasShm)('shared memory only between ranks of one host key', () => {
  for (const sameHost of [true, false]) {
    it(`a mesh link between ${sameHost ? 'equal' : 'different'} host keys ${sameHost ? 'uses' : 'does not use'} shared memory, and --verbose says so on both sides`, async () => {
      const { meshes, lines } = await twoMeshes(sameHost);
      const [sender, receiver] = await withDeadline(Promise.all([meshes[0].connect(1, 'p2p'), meshes[1].accept(0, 'p2p', 10_000)]), 15_000, 'link');
      const to = sameHost
        ? 'rank 0: p2p link to rank 1: payloads through shared memory'
        : 'rank 0: p2p link to rank 1: payloads through the socket (rank 1 is on another host: boot id or network namespace differ)';
      expect(lines[0]).toContain(to);
      const from = await lineMatching(lines[1], /^rank 1: p2p link from rank 0: /);
      expect(from).toBe(
        sameHost
          ? 'rank 1: p2p link from rank 0: payloads through shared memory'
          : 'rank 1: p2p link from rank 0: payloads through the socket (rank 0 is on another host: boot id or network namespace differ)',
      );
      expect((sender as Link).sharedMemory).toBe(sameHost);
      expect((receiver as Link).sharedMemory).toBe(sameHost);
      expect([...lines[0], ...lines[1]].filter((l) => l.startsWith('warning'))).toEqual([]);
    });
  }

  it('a ring of three where one rank has another host key: only the link between the other two uses shared memory; results exact', async () => {
    // One key per rank, handed out in the order the ranks ask: whichever rank gets B, the other
    // two are neighbours (a ring of three), so exactly one pair of ring links shares a host.
    keys.next = ['key-A', 'key-A', 'key-B'];
    keys.emulated = true;
    const gs: RingGroup[] = await createLocalGroups(3, { transport: 'ws', timeoutMs: 20_000, chunkBytes: 256 * 1024 });
    cleanup.push(...gs.map((g) => () => g.shutdown()));
    expect(keys.next).toEqual([]);
    type Internals = { comm: { leftLink: Link; rightLink: Link }; fabric: { mesh: LinkMesh; p2p: unknown } };
    const inside = (g: RingGroup) => g as unknown as Internals;
    let shared = 0;
    for (const g of gs) {
      const { comm, fabric } = inside(g);
      const right = comm.rightLink.peer;
      // What the rank table told this rank about its right neighbour, and what the link does.
      const same = fabric.mesh.noSharedMemory(right) === undefined;
      expect(comm.rightLink.sharedMemory, `rank ${g.rank} -> rank ${right}`).toBe(same);
      expect(inside(gs[right]).comm.leftLink.sharedMemory, `rank ${right} <- rank ${g.rank}`).toBe(same);
      if (same) shared++;
    }
    expect(shared).toBe(1);
    // Point-to-point between every pair: mesh links follow the same keys.
    const n = 300_001;
    for (const [a, b] of [[0, 1], [1, 2], [2, 0]]) {
      const x = Float32Array.from({ length: n }, (_, i) => (i % 97) + a);
      const into = new Float32Array(n);
      await withDeadline(Promise.all([gs[a].send(x, { dst: b, tag: 7 }), gs[b].recv(into, { src: a, tag: 7 })]), 20_000, `send ${a} -> ${b}`);
      expect(firstDiff(into, x), `send ${a} -> ${b}`).toBeUndefined();
    }
    let sharedP2p = 0;
    for (const g of gs) {
      const p2p = inside(g).fabric.p2p as unknown as { links(f: (l: Link) => void): void };
      p2p.links((l) => {
        const same = inside(g).fabric.mesh.noSharedMemory(l.peer) === undefined;
        expect(l.sharedMemory, `rank ${g.rank}'s p2p link with rank ${l.peer}`).toBe(same);
        if (same) sharedP2p++;
      });
    }
    expect(sharedP2p).toBe(2); // the one same-host send, seen from both of its ends
    const inputs = gs.map((g) => input(Float32Array, 'sum', g.rank, 1_000_003));
    const got = await withDeadline(Promise.all(gs.map((g, r) => g.allreduce(inputs[r]))), 20_000, 'allreduce');
    for (const x of got) expect(firstDiff(x, expected(Float32Array, 'sum', inputs))).toBeUndefined();
  });
});
