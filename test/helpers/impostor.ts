import { randomBytes } from 'node:crypto';
import type { WebSocket, WebSocketServer } from 'ws';
import type { InitOptions, RingGroup } from '../../src/index.js';
import { resolveOptions } from '../../src/options.js';
import { machineKey } from '../../src/rendezvous/address.js';
import { PROTOCOL } from '../../src/rendezvous/records.js';
import { formRing } from '../../src/rendezvous/ring.js';
import { closeServer, startStoreServer, StoreClient } from '../../src/rendezvous/store.js';
import { encodeReply, KIND_SHM_OFFER, noOffer } from '../../src/transport/shm/region.js';
import { clientHandshake, serverHandshake } from '../../src/transport/ws/auth.js';
import { Inbox } from '../../src/transport/ws/inbox.js';
import { connect, listen } from '../../src/transport/ws/socket.js';
import { decodeMessage, encodeControl, KIND_DATA_HEADER } from '../../src/transport/wire.js';
import { withDeadline } from './reference.js';

/**
 * A token holder playing rank 2 of a live 3-rank ring on 127.0.0.1: real ranks 0 and 1 (formRing,
 * real sockets) and an impostor that passes the handshake, behaves until the ring is formed
 * (forwards descriptors, declines shared memory, sends its part of the start-up barrier), and then
 * sends whatever the test wants.
 *
 * Data flows left to right: the impostor is rank 0's LEFT neighbour (`toRank0` carries data and
 * descriptors to rank 0) and rank 1's RIGHT one (`toRank1` carries only control back to rank 1).
 */
export interface Impostor {
  toRank0: WebSocket;
  toRank1: WebSocket;
  /** Stops forwarding rank 1's descriptors to rank 0 (a test that wants to forward them itself). */
  stopForwarding(): void;
}

export interface ImpostorRing {
  groups: RingGroup[];
  impostor: Impostor;
  token: string;
  close(): Promise<void>;
}

/** A live ring of real ranks 0 and 1 and an impostor as rank 2. `options` go to both real ranks. */
export async function ringWithImpostor(logs: string[], options: InitOptions = {}): Promise<ImpostorRing> {
  const token = randomBytes(16).toString('hex');
  const logger = { warn: (m: string) => logs.push(m), info: () => {} };
  const chunkBytes = options.chunkBytes ?? 64;
  const store = await startStoreServer({ host: '127.0.0.1', port: 0, token, worldSize: 3, logger });
  const deadline = Date.now() + 20_000;
  const real = [0, 1].map((rank) =>
    formRing(
      resolveOptions(
        { timeoutMs: 10_000, startTimeoutMs: 20_000, logger, ...options, rank, size: 3, token, hostStore: false, store: `127.0.0.1:${store.endpoint.port}`, chunkBytes },
        {},
      ),
    ),
  );
  const sc = await StoreClient.connect(store.endpoint, token, 2, deadline);
  const maxPayload = Math.max(1 << 20, chunkBytes + 24 + 4096);
  const { server, endpoint } = await listen('127.0.0.1', 0, maxPayload);
  const fromRank0 = new Promise<Inbox>((resolve, reject) =>
    server.on('connection', (ws: WebSocket) => {
      const inbox = new Inbox(ws);
      const peer = 'rank 0';
      serverHandshake(inbox, { token, serverId: 'rank:2', challenge: { rank: 2, role: 'rank' }, admit: () => undefined, timeoutMs: 10_000, peer }).then(
        () => resolve(inbox),
        reject,
      );
    }),
  );
  await sc.set('ring/2', { host: '127.0.0.1', port: endpoint.port, size: 3, chunkBytes, tls: false, protocol: PROTOCOL, machine: machineKey(), pid: process.pid, hostname: 'impostor' });
  const table = (await sc.get(['ring/0', 'ring/1', 'ring/2'], 20_000)) as Array<{ host: string; port: number }>;
  const rank1 = await connect(table[1], maxPayload, deadline, 'rank 1');
  await clientHandshake(rank1, { token, rank: 2, serverId: 'rank:1', timeoutMs: 10_000, peer: 'rank 1' });
  const rank0 = await fromRank0;
  // Behave like rank 2: forward descriptors around the ring (except those whose next stop is their origin).
  // Shared-memory set-up (transport/shm.ts): offer nothing to rank 0, decline rank 1's offer.
  let forwarding = true;
  rank0.socket.send(noOffer());
  let rawNext = false; // after a header-only data message, the next one is its raw payload
  rank1.drain((data) => {
    if (rawNext) return void (rawNext = false);
    if (data[0] === KIND_SHM_OFFER) return rank1.socket.send(encodeReply(false, 'impostor'));
    if (data[0] === KIND_DATA_HEADER) return void (rawNext = true);
    const d = decodeMessage(data, 'rank 1');
    if (forwarding && d.kind === 'control' && d.msg.t === 'desc' && d.msg.origin !== 0 && rank0.socket.readyState === rank0.socket.OPEN) rank0.socket.send(data);
  });
  rank0.drain(() => {});
  rank0.socket.send(encodeControl({ t: 'desc', seq: 0, origin: 2, d: { kind: 'barrier', op: '', dtype: 0, count: 0, name: 'ringreduce:ring', root: -1, compression: 'none' } }));
  const groups = await withDeadline(Promise.all(real), 30_000, 'ring formation');
  sc.close();
  return {
    groups,
    token,
    impostor: { toRank0: rank0.socket, toRank1: rank1.socket, stopForwarding: () => (forwarding = false) },
    async close() {
      rank0.socket.terminate();
      rank1.socket.terminate();
      await Promise.all(groups.map((g: RingGroup) => g.shutdown().catch(() => {})));
      await closeServer(server as WebSocketServer);
      await store.close();
    },
  };
}
