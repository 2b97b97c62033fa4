import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { Communicator } from '../collectives/communicator.js';
import { meshLinks, smallOpsRoute } from '../collectives/comm/direct-route.js';
import { mod } from '../collectives/schedule.js';
import { RingError, RingPeerLostError, RingRendezvousError, RingTimeoutError } from '../errors.js';
import { RingGroup } from '../group.js';
import { defaultBusyPollUs, type ResolvedOptions } from '../options.js';
import { Fabric, hierarchyFor } from '../process-group.js';
import type { Link } from '../transport/link.js';
import { LinkMesh } from '../transport/mesh.js';
import { shmAvailable, takeReserveWarning } from '../transport/shm/region.js';
import type { Listener } from '../transport/transport.js';
import { fdShortage } from '../transport/fds.js';
import { DATA_HEADER_BYTES } from '../transport/wire.js';
import { formatHost } from '../transport/ws/socket.js';
import { WsTransport } from '../transport/ws/transport.js';
import { chooseAddress, machineKey, pidSpace } from './address.js';
import { FileStore } from './file-store.js';
import { describeHosts, ranksOnMachine, subRings, type HostLayout } from './hosts.js';
import { HIERARCHICAL_MIN_BYTES } from '../collectives/hierarchical.js';
import { withDeadline } from '../deadline.js';
import { agreeOnLayout, checkReachable, checkRecord, checkTable, PROTOCOL, type RankRecord } from './records.js';
import { startStoreServer, StoreClient, type RendezvousStore, type StoreServer } from './store.js';

function storeListenHost(host: string): string {
  // Listen exactly where MASTER_ADDR points when it is an address; a name may resolve to an
  // interface we cannot guess, so listen on all of them then.
  return isIP(host) ? host : '0.0.0.0';
}

/**
 * Forms this process's ring: rendezvous through the store, then an authenticated WebSocket to
 * the left neighbour (we connect) and one from the right neighbour (it connects to us).
 *
 *   1. rank 0 starts the store if no launcher hosts one;
 *   2. listen on an ephemeral port; publish {host, port, size, chunkBytes} as ring/<rank>;
 *   3. read every rank's record (so a missing rank is named), check they agree;
 *   4. connect left + accept right, both with the HMAC handshake;
 *   5. offer the right neighbour shared memory for payloads, answer the left's offer (a neighbour
 *      on the same host takes it; see transport/shm/region.ts);
 *   6. a barrier over the new ring proves every link works end to end (under the start deadline too).
 *
 * A rank 0 that hosts the store keeps it until shutdown(): the comm thread of the tfjs engine
 * forms a second ring later through the same store (under another `keyPrefix`).
 */
/**
 * Busy polling needs a core to spare for every poller. The launcher's local size counts the ranks
 * it started on this host; ranks in other network namespaces of this machine (emulated hosts, or
 * containers) share its CPUs too, and with more ranks than CPUs a poller takes the core of the
 * rank it waits for: measured with 4 emulated hosts on 2 cores, a 4-byte all-reduce took 688 us
 * polling and 576 us not. Only the default changes; a configured busyPollUs stays.
 */
export function withPollingForMachine(o: ResolvedOptions, machines: string[], rank: number): ResolvedOptions {
  if (!o.busyPollIsDefault || o.busyPollUs === 0) return o;
  const busyPollUs = defaultBusyPollUs(Math.max(o.localSize, ranksOnMachine(machines, rank)));
  if (busyPollUs === o.busyPollUs) return o;
  if (o.verbose && rank === 0) o.logger.info(`rank 0: busy polling off: ${ranksOnMachine(machines, rank)} ranks share this machine's CPUs (network namespaces included)`);
  return { ...o, busyPollUs };
}

export async function formRing(o: ResolvedOptions, keyPrefix = 'ring'): Promise<RingGroup> {
  const { rank, size } = o;
  if (size === 1) {
    return new RingGroup(new Communicator(0, 1, undefined, undefined, o), o);
  }
  if (o.tokenIsDefault && rank === 0) {
    o.logger.warn('no job token (RINGRUN_TOKEN / RINGREDUCE_TOKEN) is set: ring links are not protected by a secret');
  }
  const deadline = Date.now() + o.startTimeoutMs;
  const left = mod(rank - 1, size);
  const right = mod(rank + 1, size);
  const maxPayload = o.chunkBytes + DATA_HEADER_BYTES + 4096;
  let storeServer: StoreServer | undefined;
  let store: RendezvousStore | undefined;
  let listener: Listener | undefined;
  let mesh: LinkMesh | undefined;
  const where = o.store!;
  try {
    if ('dir' in where) {
      store = await FileStore.open(where.dir);
    } else {
      if (o.hostStore) {
        storeServer = await startStoreServer({
          host: storeListenHost(where.host),
          port: where.port,
          token: o.token,
          worldSize: size,
          logger: o.logger,
          tls: o.tls,
        }).catch((e: Error) => {
          throw new RingRendezvousError(`rank 0 cannot host the rendezvous store at ${where.host}:${where.port} (MASTER_ADDR/MASTER_PORT): ${e.message}`);
        });
        storeServer.unref();
      }
      store = await StoreClient.connect(where, o.token, rank, deadline, o.tls).catch((e: Error) => {
        throw storeUnreachable(o, where, e);
      });
    }
    // The TCP connection to the store already knows the interface that routes there.
    const chosen =
      o.host || o.iface || !store.localAddress
        ? await chooseAddress({ host: o.host, iface: o.iface, storeHost: 'host' in where ? where.host : undefined, allLocal: size > 1 && o.localSize === size })
        : { address: store.localAddress, how: `the route to the rendezvous store at ${store.where}` };
    const host = chosen.address;
    // One port per rank: the ring's links and every other link to this rank (point-to-point,
    // process groups) arrive there, each on its channel.
    const transport = new WsTransport({ rank, token: o.token, host, maxPayload, tls: o.tls, logger: o.logger });
    mesh = new LinkMesh(rank, size, transport, o);
    // The ring's channel admits exactly one connection: the right neighbour's.
    mesh.restrict('ring', {
      admit: (r) => (r !== right ? `only rank ${right} may connect to rank ${rank}` : undefined),
      label: () => 'right neighbour',
    });
    listener = await transport.listen(mesh);
    const port = listener.address.port;
    if (o.verbose) {
      o.logger.info(`rank ${rank}: ${keyPrefix} links listen on ${o.tls ? 'wss' : 'ws'}://${formatHost(host)}:${port} (${chosen.how})`);
    }

    const me: RankRecord = {
      host,
      port,
      size,
      chunkBytes: o.chunkBytes,
      pid: process.pid,
      hostname: hostname(),
      machine: machineKey(),
      tls: o.tls !== undefined,
      protocol: PROTOCOL,
      pids: pidSpace(),
      hierarchical: o.hierarchical,
      smallOps: o.smallOps,
    };
    await store.set(`${keyPrefix}/${rank}`, me);
    const keys = Array.from({ length: size }, (_, r) => `${keyPrefix}/${r}`);
    let table: RankRecord[];
    try {
      table = (await store.get(keys, Math.max(0, deadline - Date.now()))) as RankRecord[];
    } catch (e) {
      const missing = ((e as { missing?: string[] }).missing ?? []).map((k) => Number(k.slice(keyPrefix.length + 1)));
      if (missing.length === 0) throw e;
      throw new RingTimeoutError(
        `rank ${rank}: ranks ${missing.join(', ')} of ${size} did not join within the start timeout (${o.startTimeoutMs / 1000} s)${outOfFds(storeServer)}`,
        { rank, ranks: missing, op: 'init' },
      );
    }
    table = table.map((t, r) => checkRecord(rank, r, t));
    checkTable(rank, table);
    checkReachable(rank, table);
    const layout = agreeOnLayout(rank, table);
    o = withPollingForMachine(o, table.map((t) => t.machine), rank);
    // A peer's pid means something here only inside the same pid namespace of the same boot;
    // shared memory only with ranks of the same host key (boot id and network namespace).
    mesh.setAddresses(
      table.map((t) => ({ host: t.host, port: t.port, pid: t.pids && t.pids === me.pids ? t.pid : undefined, sameHost: t.machine === me.machine })),
    );

    const [leftLink, rightLink] = await Promise.all([
      mesh.open(left, 'ring', deadline, 'left neighbour'),
      withDeadline(mesh.accept(right, 'ring', 0), deadline, () =>
        new RingTimeoutError(`rank ${rank}: rank ${right} (right neighbour) did not connect within the start timeout${outOfFds(listener)}`, {
          rank,
          ranks: [right],
          op: 'init',
        }),
      ),
    ]);
    const [m, l] = [mesh, listener];
    await linkSharedMemory(o, m, leftLink, rightLink, deadline, keyPrefix);
    const hosts = layout.hosts.length;
    const route = smallOpsRoute(o.smallOps, size, hosts);
    if (o.verbose && rank === 0 && keyPrefix === 'ring') {
      o.logger.info(`rank 0: small operations go ${route === 'direct' ? 'over direct links' : 'around the ring'} (RINGREDUCE_SMALL_OPS=${o.smallOps}, ${size} ranks on ${hosts} host${hosts > 1 ? 's' : ''})`);
    }
    const direct = route === 'direct' ? { links: meshLinks(m), radix: o.smallOpsRadix } : undefined;
    const comm = new Communicator(rank, size, leftLink, rightLink, o, direct);
    const fabric = new Fabric(m, o, () => comm.error);
    const group = new RingGroup(comm, {
      localRank: o.localRank,
      localSize: o.localSize,
      address: `${formatHost(host)}:${port}`,
      fabric,
      onShutdown: async () => {
        await fabric.shutdown();
        await l.close();
        await storeServer?.close();
      },
    });
    // The last step of forming the ring runs under the start deadline too: without an operation
    // deadline (RINGREDUCE_TIMEOUT=0) a neighbour that completed the set-up and then went silent
    // would hold init() forever.
    await withDeadline(group.barrier({ name: `ringreduce:${keyPrefix}` }), deadline, () => {
      const missing = comm.notReached(0);
      const who = missing.length ? `rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} did not reach it` : `rank ${left} (left neighbour) sent no data`;
      return new RingTimeoutError(`rank ${rank}: the ring's first barrier did not complete within the start timeout (${o.startTimeoutMs / 1000} s): ${who}`, {
        rank,
        ranks: missing.length ? missing : [left],
        op: 'init',
      });
    });
    // The host and cross-host rings, on every rank or none (the layout is the same everywhere).
    if (layout.hierarchical) {
      const { local, cross } = subRings(layout, rank);
      const h = await withDeadline(hierarchyFor(fabric, rank, size, local, cross), deadline, () =>
        new RingTimeoutError(`rank ${rank}: the host and cross-host rings of the hierarchical all-reduce did not form within the start timeout (${o.startTimeoutMs / 1000} s)`, {
          rank,
          ranks: [...local, ...cross].filter((r) => r !== rank),
          op: 'init',
        }),
      );
      group.useHierarchy(h);
    }
    if (keyPrefix === 'ring' && rank === 0) sayLayout(o, layout, m);
    // Every rank has read the table: this rank's entry is no longer needed (a file store deletes it).
    await store.release([`${keyPrefix}/${rank}`]);
    store.close();
    return group;
  } catch (e) {
    store?.close();
    await storeServer?.close();
    await mesh?.close();
    await listener?.close();
    throw e instanceof RingError ? e : new RingRendezvousError(`rank ${rank}: init failed: ${(e as Error).message}`, { rank }, { cause: e });
  }
}

/**
 * Said where this rank waited in vain for connections to a server of its own, when it is out of
 * file descriptors: its server then drops every connection unseen (see transport/fds.ts), and the
 * blame is its own, not the peers'.
 */
function outOfFds(server: unknown): string {
  if (!server) return '';
  const why = fdShortage();
  return why ? ` — but ${why}, so connections to it are dropped` : '';
}

/**
 * Shared-memory payloads on both links where the neighbour shares this host key (the rank table
 * says; see LinkMesh.noSharedMemory). Every rank runs both halves (an offer may be "no offer"), so
 * the set-up never waits on a rank that skipped it.
 */
async function linkSharedMemory(o: ResolvedOptions, mesh: LinkMesh, leftLink: Link, rightLink: Link, deadline: number, keyPrefix: string): Promise<void> {
  const say = keyPrefix === 'ring';
  const ms = Math.max(1000, deadline - Date.now());
  // As many slots as frames may be on the wire per link: twice as many measured no faster and cost
  // 8 MiB more of each rank's memory at the default chunk size.
  const slots = o.maxInflight;
  const [sendOff, recvOff] = [mesh.noSharedMemory(rightLink.peer), mesh.noSharedMemory(leftLink.peer)];
  const [sendWhy, recvWhy] = await Promise.all([
    rightLink.offerSharedMemory?.(sendOff === undefined, slots, o.chunkBytes, ms),
    leftLink.acceptSharedMemory?.(recvOff === undefined, o.chunkBytes, ms),
  ]).catch((e: Error) => {
    // A neighbour that hung up during the set-up: say which rank saw it.
    if (e instanceof RingPeerLostError) throw new RingPeerLostError(`rank ${o.rank}: ${e.message}`, { ...e.details, rank: o.rank, op: 'init' });
    throw e;
  });
  if (rightLink.offerSharedMemory) mesh.sayPath(rightLink.peer, `${keyPrefix} link to`, sendOff ?? sendWhy);
  if (leftLink.acceptSharedMemory) mesh.sayPath(leftLink.peer, `${keyPrefix} link from`, recvOff ?? recvWhy);
  const local = shmAvailable();
  if (say && o.sharedMemory && local && o.localSize > 1 && o.localRank === 0 && (sendWhy || recvWhy)) {
    o.logger.info(`rank ${o.rank}: payloads between ranks on this host go through sockets: ${local}`);
  }
  const full = takeReserveWarning();
  if (say && full) o.logger.warn(`rank ${o.rank}: ${full}: payloads from this rank to ranks on this host go through sockets`);
}

/**
 * Rank 0 says what all-reduces across hosts will do: with --verbose the decision, and with
 * `hierarchical: true` a warning when the layout does not allow it.
 */
function sayLayout(o: ResolvedOptions, layout: HostLayout, mesh: LinkMesh): void {
  if (layout.hierarchical) {
    if (!o.verbose) return;
    const peer = layout.hosts[0][1];
    const why = mesh.noSharedMemory(peer) ?? shmAvailable();
    const links = why ? `sockets: ${why}` : 'shared memory';
    o.logger.info(`rank 0: hierarchical all-reduce: ${layout.hosts.length} hosts x ${layout.perHost} ranks (local links: ${links}; inputs of ${HIERARCHICAL_MIN_BYTES >> 20} MiB and more)`);
  } else if (o.hierarchical === 'on' && o.size > 1) {
    o.logger.warn(`rank 0: hierarchical all-reduce requested, but the ranks run on ${describeHosts(layout.hosts)} (it needs >= 2 hosts with the same number >= 2 of ranks each): all-reduces use the flat ring`);
  } else if (o.verbose) {
    o.logger.info(`rank 0: flat ring: ${layout.reason}`);
  }
}

/** Started by a launcher without a store of its own, rank 0 hosts it: if it never came up, say so. */
function storeUnreachable(o: ResolvedOptions, where: { host: string; port: number }, e: Error): Error {
  if (!(e instanceof RingRendezvousError) || o.hostStore || o.source === 'ringrun' || o.source === 'options') return e;
  const at = `${formatHost(where.host)}:${where.port}`;
  return new RingRendezvousError(
    `rank ${o.rank}: rank 0, which hosts the rendezvous store at MASTER_ADDR:MASTER_PORT (${at}), did not start it ` +
      `within the start timeout (${o.startTimeoutMs / 1000} s): ${e.message}`,
    { rank: o.rank, ranks: [0], op: 'init' },
    { cause: e },
  );
}
