import { randomBytes } from 'node:crypto';
import type { WebSocket, WebSocketServer } from 'ws';
import type { RingGroup } from '../../src/index.js';
import { resolveOptions } from '../../src/options.js';
import { machineKey } from '../../src/rendezvous/address.js';
import { PROTOCOL, formRing } from '../../src/rendezvous/ring.js';
import { closeServer, startStoreServer, StoreClient } from '../../src/rendezvous/store.js';
import { encodeReply, KIND_SHM_OFFER, noOffer } from '../../src/transport/shm/region.js';
import { decodeMessage, encodeControl } from '../../src/transport/wire.js';
import { clientHandshake, serverHandshake } from '../../src/transport/ws/auth.js';
import { Inbox } from '../../src/transport/ws/inbox.js';
import { connect, listen } from '../../src/transport/ws/socket.js';
import { withDeadline } from './reference.js';

/**
 * A live ring of real ranks 0 and 1 (in this process) and an impostor with the job token as rank
 * 2, which behaves until the ring is formed and then sends whatever a test makes it send. (The
 * same set-up as test/hostile-peer.test.ts's.)
 *
 *   toRank0  rank 0 connected here: the impostor is rank 0's LEFT neighbour (data flows to rank 0)
 *   toRank1  the impostor connected to rank 1: it is rank 1's RIGHT neighbour, whose heartbeats
 *            rank 1 hears (nothing but control flows back)
 */
export interface Impostor {
  toRank0: WebSocket;
  toRank1: WebSocket;
}

export async function ringWithImpostor(logs: string[], o: { chunkBytes?: number; timeoutMs?: number } = {}) {
  const token = randomBytes(16).toString('hex');
  const chunkBytes = o.chunkBytes ?? 64;
  const logger = { warn: (m: string) => logs.push(m), info: () => {} };
  const store = await startStoreServer({ host: '127.0.0.1', port: 0, token, worldSize: 3, logger });
  const deadline = Date.now() + 10_000;
  const options = (rank: number) =>
    resolveOptions(
      { rank, size: 3, token, hostStore: false, store: `127.0.0.1:${store.endpoint.port}`, chunkBytes, timeoutMs: o.timeoutMs ?? 10_000, startTimeoutMs: 10_000, logger },
      {},
    );
  const real = [0, 1].map((rank) => formRing(options(rank)));
  const sc = await StoreClient.connect(store.endpoint, token, 2, deadline);
  const { server, endpoint } = await listen('127.0.0.1', 0, 1 << 20);
  const fromRank0 = new Promise<Inbox>((resolve, reject) =>
    server.on('connection', (ws: WebSocket) => {
      const inbox = new Inbox(ws);
      serverHandshake(inbox, { token, serverId: 'rank:2', challenge: { rank: 2, role: 'rank' }, admit: () => undefined, timeoutMs: 5000, peer: 'rank 0' }).then(
        () => resolve(inbox),
        reject,
      );
    }),
  );
  await sc.set('ring/2', { host: '127.0.0.1', port: endpoint.port, size: 3, chunkBytes, tls: false, protocol: PROTOCOL, machine: machineKey(), pid: process.pid, hostname: 'impostor' });
  const table = (await sc.get(['ring/0', 'ring/1', 'ring/2'], 10_000)) as Array<{ host: string; port: number }>;
  const rank1 = await connect(table[1], 1 << 20, deadline, 'rank 1');
  await clientHandshake(rank1, { token, rank: 2, serverId: 'rank:1', timeoutMs: 5000, peer: 'rank 1' });
  const rank0 = await fromRank0;
  // Behave like rank 2: forward descriptors around the ring (except those whose next stop is their
  // origin); offer rank 0 no shared memory, decline rank 1's offer.
  rank0.socket.send(noOffer());
  rank1.drain((data) => {
    if (data[0] === KIND_SHM_OFFER) return rank1.socket.send(encodeReply(false, 'impostor'));
    const d = decodeMessage(data, 'rank 1');
    if (d.kind === 'control' && d.msg.t === 'desc' && d.msg.origin !== 0 && rank0.socket.readyState === rank0.socket.OPEN) rank0.socket.send(data);
  });
  rank0.drain(() => {});
  rank0.socket.send(encodeControl({ t: 'desc', seq: 0, origin: 2, d: { kind: 'barrier', op: '', dtype: 0, count: 0, name: 'ringreduce:ring', root: -1, compression: 'none' } }));
  const groups = await withDeadline(Promise.all(real), 15_000, 'ring formation');
  sc.close();
  const impostor: Impostor = { toRank0: rank0.socket, toRank1: rank1.socket };
  return {
    groups,
    impostor,
    async close() {
      rank0.socket.terminate();
      rank1.socket.terminate();
      await Promise.all(groups.map((g: RingGroup) => g.shutdown().catch(() => {})));
      await closeServer(server as WebSocketServer);
      await store.close();
    },
  };
}
