import { psServerEnv } from '../env.js';
import { RingError } from '../errors.js';
import { stderrLogger } from '../logger.js';
import { resolveOptions } from '../options.js';
import { chooseAddress } from '../rendezvous/address.js';
import { needTfWithBackend } from '../tfjs/tf.js';
import { DATA_HEADER_BYTES } from '../transport/wire.js';
import { WsTransport } from '../transport/ws/transport.js';
import { MAX_WORKERS, PS_CHANNEL } from './messages.js';
import { openStore, publishServer } from './rendezvous.js';
import { ParameterServer } from './server.js';

/**
 * A parameter server process: `node <ringreduce>/dist/ps/server-main.js`, which ringrun --servers
 * starts (or any launcher, with the same environment): RINGREDUCE_PS_SERVER=k,
 * RINGREDUCE_PS_SERVERS=S, the job's store (RINGRUN_STORE, RINGREDUCE_STORE or
 * MASTER_ADDR/MASTER_PORT) and token (RINGRUN_TOKEN / RINGREDUCE_TOKEN), and optionally the
 * ranks' RINGREDUCE_IFACE / _HOST / _TLS_* / _CHUNK_BYTES. It listens on one port (WebSocket, the
 * job token's handshake), publishes the address in the store, serves the workers, and exits 0
 * once every worker has left.
 */
async function main(): Promise<void> {
  const logger = stderrLogger;
  const env = psServerEnv();
  const o = resolveOptions({ rank: 0, size: 1, store: env.store, hostStore: false });
  const name = `parameter server ${env.server}`;
  const tf = needTfWithBackend(name);
  const deadline = Date.now() + o.startTimeoutMs;
  const store = await openStore(o.store!, o.token, 0, deadline, o.tls);
  const chosen =
    o.host || o.iface || !store.localAddress
      ? await chooseAddress({ host: o.host, iface: o.iface, storeHost: 'host' in o.store! ? o.store.host : undefined })
      : { address: store.localAddress, how: `the route to the rendezvous store at ${store.where}` };
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  // The transport's port does not keep a process alive (ranks have their own work): a server has none but serving.
  const alive = setInterval(() => {}, 1 << 30);
  void finished.then(() => clearInterval(alive));
  const server = new ParameterServer({ server: env.server, servers: env.servers, tf, logger, onIdle: () => done() });
  const transport = new WsTransport({
    rank: env.server,
    token: o.token,
    host: chosen.address,
    maxPayload: o.chunkBytes + DATA_HEADER_BYTES + 4096,
    tls: o.tls,
    logger,
  });
  const listener = await transport.listen({
    admit: (peer, channel) =>
      channel !== PS_CHANNEL ? `channel '${channel}' is not served here (a parameter server)` : peer < 0 || peer >= MAX_WORKERS ? `rank ${peer} is out of range` : undefined,
    accepted: (peer, _channel, link) => server.attach(peer, link),
    label: () => 'worker',
  });
  await publishServer(store, env.server, env.servers, { host: chosen.address, port: listener.address.port }, o.tls !== undefined);
  store.close();
  if (o.verbose) logger.info(`${name} of ${env.servers} listens on ${chosen.address}:${listener.address.port} (${chosen.how})`);
  // Stopped by the launcher (the workers are done, or the job ends): the same orderly exit.
  for (const s of ['SIGTERM', 'SIGINT'] as const) process.once(s, () => done());
  await finished;
  const st = server.stats();
  if (st.updates > 0 || o.verbose) {
    logger.info(
      `${name}: ${st.updates} updates, staleness max ${st.maxStaleness} mean ${st.meanStaleness.toFixed(2)} steps, lag max ${st.maxLag} mean ${st.meanLag.toFixed(2)} updates` +
        (st.lost.length ? `; lost worker${st.lost.length > 1 ? 's' : ''} ${st.lost.join(', ')}` : ''),
    );
  }
  server.close();
  await listener.close();
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    const msg = e instanceof RingError ? `${e.code}: ${e.message}` : String((e as Error)?.stack ?? e);
    process.stderr.write(`ringreduce: parameter server failed: ${msg}\n`);
    process.exit(1);
  },
);
