import { hostname } from 'node:os';
import type { StoreAddress } from '../env.js';
import { RingRendezvousError, RingTimeoutError } from '../errors.js';
import { FileStore } from '../rendezvous/file-store.js';
import { StoreClient, type RendezvousStore, type TlsConfig } from '../rendezvous/store.js';
import { checkServerRecord, PS_PROTOCOL, serverKey, type ServerRecord } from './messages.js';

/**
 * How workers find the parameter servers: through the job's rendezvous store, as ranks find each
 * other (rendezvous/ring.ts). Server k publishes its address under `ps/server/<k>`; a worker reads
 * all S keys (a server that never publishes is named at the start deadline).
 *
 * A server is no rank of the workers' world, but the store admits clients by rank number (0..N-1)
 * and a server does not know N before a worker says it: servers talk to the store as rank 0,
 * which the store allows any number of times (the job token is what authenticates).
 */
export async function openStore(where: StoreAddress, token: string, rank: number, deadline: number, tls: TlsConfig | undefined): Promise<RendezvousStore> {
  return 'dir' in where ? FileStore.open(where.dir) : StoreClient.connect(where, token, rank, deadline, tls);
}

export async function publishServer(store: RendezvousStore, k: number, servers: number, address: { host: string; port: number }, tls: boolean): Promise<void> {
  const record: ServerRecord = { host: address.host, port: address.port, server: k, servers, pid: process.pid, hostname: hostname(), tls, protocol: PS_PROTOCOL };
  await store.set(serverKey(k), record);
}

/** Every server's record; `rank` names the worker in errors. */
export async function findServers(store: RendezvousStore, servers: number, rank: number, timeoutMs: number): Promise<ServerRecord[]> {
  const keys = Array.from({ length: servers }, (_, k) => serverKey(k));
  let values: unknown[];
  try {
    values = await store.get(keys, timeoutMs);
  } catch (e) {
    const missing = ((e as { missing?: string[] }).missing ?? []).map((key) => Number(key.slice(key.lastIndexOf('/') + 1)));
    if (missing.length === 0) throw e;
    throw new RingTimeoutError(
      `rank ${rank}: parameter server${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${servers} did not publish ${missing.length > 1 ? 'their addresses' : 'its address'} within the start timeout (${timeoutMs / 1000} s): ` +
        'start them with ringrun --servers, or run dist/ps/server-main.js with RINGREDUCE_PS_SERVER/RINGREDUCE_PS_SERVERS',
      { rank, op: 'parameterServer', server: missing[0] },
    );
  }
  return values.map((v, k) => {
    const r = checkServerRecord(v, k);
    if (typeof r === 'string') throw new RingRendezvousError(`rank ${rank}: parameter server ${k}'s record in the store is bad: ${r}`, { rank, server: k });
    if (r.servers !== servers) {
      throw new RingRendezvousError(`rank ${rank}: parameter server ${k} says the job has ${r.servers} servers, this worker was told ${servers} (RINGREDUCE_PS_SERVERS)`, { rank, server: k });
    }
    return r;
  });
}
