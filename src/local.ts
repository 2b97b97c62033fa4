import { Communicator } from './collectives/communicator.js';
import { RingGroup } from './group.js';
import { silentLogger } from './logger.js';
import { resolveOptions, type InitOptions } from './options.js';
import { formRing } from './rendezvous/ring.js';
import { startStoreServer } from './rendezvous/store.js';
import { memoryLinkPair, memoryTransports } from './transport/memory.js';
import { LinkMesh } from './transport/mesh.js';
import { Fabric } from './process-group.js';
import { meshLinks, smallOpsRoute } from './collectives/comm/direct-route.js';
import type { Link } from './transport/link.js';
import { randomBytes } from 'node:crypto';

export interface LocalGroupsOptions extends Pick<InitOptions, 'chunkBytes' | 'maxInflight' | 'timeoutMs' | 'startTimeoutMs' | 'logger' | 'busyPollUs' | 'busyPollBackoff' | 'sharedMemory' | 'stallWarningMs' | 'earlyBytes' | 'hierarchical' | 'smallOps' | 'smallOpsRadix'> {
  /** 'memory' (default): in-process links; 'ws': real WebSockets on 127.0.0.1, port 0. */
  transport?: 'memory' | 'ws';
}

/**
 * `n` ranks of one ring inside this process — for tests and experiments. With the 'ws' transport
 * every rank goes through the real rendezvous, handshake and sockets on 127.0.0.1.
 */
export async function createLocalGroups(n: number, options: LocalGroupsOptions = {}): Promise<RingGroup[]> {
  const { transport = 'memory', ...rest } = options;
  const logger = rest.logger ?? silentLogger;
  if (transport === 'ws') {
    const token = randomBytes(16).toString('hex');
    const store = n > 1 ? await startStoreServer({ host: '127.0.0.1', port: 0, token, worldSize: n, logger }) : undefined;
    try {
      return await Promise.all(
        Array.from({ length: n }, (_, rank) =>
          formRing(
            resolveOptions(
              { ...rest, logger, rank, size: n, token, hostStore: false, store: store ? `127.0.0.1:${store.endpoint.port}` : undefined },
              {},
            ),
          ),
        ),
      );
    } finally {
      await store?.close();
    }
  }
  const o = resolveOptions({ ...rest, logger, rank: 0, size: 1 }, {});
  // links[r] = [left link of r, right link of r]; the pair (r -> r+1) is r's right and r+1's left.
  const lefts: (Link | undefined)[] = new Array(n).fill(undefined);
  const rights: (Link | undefined)[] = new Array(n).fill(undefined);
  if (n > 1) {
    for (let r = 0; r < n; r++) {
      const [toRight, fromLeft] = memoryLinkPair(r, (r + 1) % n);
      rights[r] = toRight;
      lefts[(r + 1) % n] = fromLeft;
    }
  }
  const transports = memoryTransports(n);
  const meshes = transports.map((t, r) => new LinkMesh(r, n, t, o));
  const listeners = await Promise.all(transports.map((t, r) => t.listen(meshes[r])));
  for (const mesh of meshes) mesh.setAddresses(listeners.map((l) => l.address));
  // In-process ranks share one host: 'auto' keeps the ring (see smallOpsRoute).
  const direct = smallOpsRoute(o.smallOps, n, 1) === 'direct';
  return Array.from({ length: n }, (_, r) => {
    const comm = new Communicator(r, n, lefts[r], rights[r], o, direct ? { links: meshLinks(meshes[r]), radix: o.smallOpsRadix } : undefined);
    const fabric = new Fabric(meshes[r], o, () => comm.error);
    return new RingGroup(comm, { localRank: r, localSize: n, fabric, onShutdown: () => fabric.shutdown() });
  });
}
