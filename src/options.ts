import { cpus } from 'node:os';
import { readFileSync } from 'node:fs';
import { discover, parseStoreAddress, SMALL_OPS, tuning, type Discovered, type Env, type SmallOps, type StoreAddress } from './env.js';
import { RingInvalidArgError } from './errors.js';
import { stderrLogger, type Logger } from './logger.js';

/** Options of init(). Anything not given comes from the environment (see env.ts), then defaults. */
export interface InitOptions {
  /** This process's rank; with `size`, overrides the environment. */
  rank?: number;
  size?: number;
  localRank?: number;
  localSize?: number;
  /**
   * Rendezvous store: 'host:port', or 'file:///shared/dir' for a directory every rank can see
   * (default: RINGRUN_STORE, else RINGREDUCE_STORE, else MASTER_ADDR:MASTER_PORT).
   */
  store?: string;
  /** Host the store in this process (default: rank 0 does when no launcher hosts one). */
  hostStore?: boolean;
  /** Shared secret of the job (default: RINGRUN_TOKEN / RINGREDUCE_TOKEN). */
  token?: string;
  /** Address other ranks reach this one at (default: the local address of the route to the store). */
  host?: string;
  /** Advertise the address of this network interface, e.g. 'eth1' (RINGREDUCE_IFACE). */
  iface?: string;
  /**
   * TLS (wss://) for ring links and the store: PEM certificate and key of this rank, and the CA
   * that signed every rank's certificate (both sides verify). Default: RINGREDUCE_TLS_CERT/_KEY/_CA
   * (file paths). The job token's HMAC handshake still runs inside the TLS channel.
   */
  tls?: TlsPem;
  /** Bytes per data frame; all ranks must use the same value. Default 1 MiB (RINGREDUCE_CHUNK_BYTES). */
  chunkBytes?: number;
  /** Data frames in flight per link. Default 4. */
  maxInflight?: number;
  /** Per-operation timeout in ms, 0 = none. Default 300000 (RINGREDUCE_TIMEOUT, in seconds). */
  timeoutMs?: number;
  /** Time allowed for all ranks to arrive and link up, ms. Default 60000 (RINGRUN_START_TIMEOUT, s). */
  startTimeoutMs?: number;
  /** Where warnings go. Default: stderr. */
  logger?: Logger;
  /** tfjs engine: gradients reduced together in one fusion buffer, bytes; 0 = no fusion. Default 64 MiB (RINGREDUCE_FUSION_THRESHOLD). */
  fusionBytes?: number;
  /** Warn when a collective, or (tfjs engine) a submitted tensor, waits this long for other ranks, ms. Default 60000 (RINGREDUCE_STALL_WARNING, s). */
  stallWarningMs?: number;
  /**
   * While an operation is pending, keep polling the sockets instead of sleeping, for up to this many
   * microseconds after the last message arrived. Cuts small-operation latency when every rank has
   * a core of its own; costs a busy core while waiting, and hurts when ranks share cores with other
   * work (a poller that waits long gives its core away with sched_yield). Default: 1000 when this
   * host runs no more ranks than it has CPUs, else 0 = off (RINGREDUCE_BUSY_POLL_US).
   */
  busyPollUs?: number;
  /**
   * Polling stops for a while (20 ms, doubling up to 2 s) when the rank keeps waiting for a CPU
   * while it polls (a crowded machine: the rank it polls for needs that core). Default false
   * (RINGREDUCE_BUSY_POLL_BACKOFF=1 turns it on): measured on a 2-core VM it helped 4 emulated
   * hosts on 2 cores (a 4-byte all-reduce 588 us against 688 us) but slowed 2 ranks bound to a
   * core each 4x (108 us against 25 us), whose own V8 threads show as run-queue time.
   */
    busyPollBackoff?: boolean;
  /**
   * Payloads to a neighbour on the same host go through shared memory (a /dev/shm mapping made by
   * the native addon) instead of the socket; the WebSocket still carries headers and control.
   * Default true (RINGREDUCE_SHM=0 turns it off); without the addon, or across hosts, links
   * fall back to the socket by themselves.
   */
  sharedMemory?: boolean;
  /**
   * Bytes of data frames this rank holds for operations it has not started yet (its left
   * neighbour runs ahead). Past this, reading from the left pauses until this rank catches up (the
   * neighbour's sends wait: backpressure), or — when this rank still needs data from the left for
   * an operation it is running — the ring fails with RING_ERR_PROTOCOL naming the neighbour.
   * Default 64 MiB (RINGREDUCE_EARLY_BYTES); at least chunkBytes. Raise it only for ranks that
   * run collectives concurrently (Promise.all) that others run one at a time, on large tensors.
   */
  earlyBytes?: number;
  /**
   * All-reduces of at least HIERARCHICAL_MIN_BYTES (1 MiB) across hosts: reduce-scatter among the
   * ranks of each host, an all-reduce of each shard between hosts (one ring per local rank, all at
   * once), all-gather on each host. 'auto' (the default) uses it when the ranks span >= 2 hosts
   * with the same number (>= 2) of ranks each; true as well, but warns (rank 0, once) when the
   * layout does not allow it; false never. Every rank must have the same setting
   * (RINGREDUCE_HIERARCHICAL=auto|1|0, ringrun --hierarchical[=auto|on|off]).
   */
  hierarchical?: 'auto' | boolean;
  /**
   * The route of small operations (barrier, all-reduce of inputs up to 16 KiB, all-to-all's
   * agreement): 'ring' (N-1 hops around the ring), 'direct' (ceil(log8 N) rounds over links
   * straight to other ranks), 'auto' (direct when N >= 3 and the ranks span more than one host).
   * Every rank must use the same. Default 'auto' (RINGREDUCE_SMALL_OPS).
   */
  smallOps?: SmallOps;
  /** @internal The direct route's radix (tests: several rounds with few ranks). Default 8. */
  smallOpsRadix?: number;
}

/** The hierarchical setting, resolved: as it is published in the rank record and compared. */
export type HierarchicalMode = 'auto' | 'on' | 'off';

/** PEM texts of a TLS identity and the CA to trust. */
export interface TlsPem {
  cert: string;
  key: string;
  ca?: string;
}

export interface ResolvedOptions {
  rank: number;
  size: number;
  localRank: number;
  localSize: number;
  source: Discovered['source'] | 'options';
  store?: StoreAddress;
  hostStore: boolean;
  token: string;
  tokenIsDefault: boolean;
  host?: string;
  iface?: string;
  tls?: TlsPem;
  /** Say which addresses were chosen, and per link shared memory or socket (RINGREDUCE_VERBOSE, ringrun --verbose). */
  verbose: boolean;
  chunkBytes: number;
  maxInflight: number;
  timeoutMs: number;
  startTimeoutMs: number;
  logger: Logger;
  fusionBytes: number;
  stallWarningMs: number;
  busyPollUs: number;
  /** busyPollUs was not configured: formRing may lower it once it knows every rank's machine. */
  busyPollIsDefault: boolean;
  busyPollBackoff: boolean;
  sharedMemory: boolean;
  earlyBytes: number;
  hierarchical: HierarchicalMode;
  smallOps: SmallOps;
  smallOpsRadix: number;
  /** Parameter servers of the job (RINGREDUCE_PS_SERVERS, set by ringrun --servers); 0: none. */
  psServers: number;
}

export const DEFAULTS = {
  chunkBytes: 1 << 20,
  maxInflight: 4,
  timeoutMs: 300_000,
  startTimeoutMs: 60_000,
  fusionBytes: 64 << 20,
  stallWarningMs: 60_000,
  sharedMemory: true,
  earlyBytes: 64 << 20,
  smallOps: 'auto' as SmallOps,
  // The direct route's radix: up to 8 ranks exchange in one round (every rank straight to every
  // other); beyond, log8 N rounds, so a rank links to 14 x rounds peers at most, not N-1.
  smallOpsRadix: 8,
};

/**
 * busyPollUs unless configured: poll for up to 1 ms when this host runs no more ranks than it has
 * CPUs, else never (a poller would take the core of a rank it waits for). Decided from the
 * launcher's local size first, then again by formRing from the ranks on this machine's kernel,
 * network namespaces included (see ranksOnMachine). With polling, messages
 * between ranks on one host go through shared memory without a system call (see Mailbox): a 4-byte
 * all-reduce of 2 ranks measured 60-90 us instead of 380-460 us.
 */
export function defaultBusyPollUs(localSize: number, hostCpus = onlineCpus()): number {
  return localSize <= hostCpus ? 1000 : 0;
}
// All online CPUs, not availableParallelism(): ringrun binds each rank to its own share of them.
const onlineCpus = (): number => Math.max(1, cpus().length);

/** Used only when no token is configured anywhere: links are then not protected by a secret. */
export const INSECURE_DEFAULT_TOKEN = 'ringreduce-insecure-default-token';

function positiveInt(name: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new RingInvalidArgError(`options.${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new RingInvalidArgError(`options.${name} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

export function resolveOptions(o: InitOptions = {}, env: Env = process.env): ResolvedOptions {
  if (o === null || typeof o !== 'object') throw new RingInvalidArgError(`init(options): options must be an object`);
  const t = tuning(env);
  let d: Discovered;
  let source: ResolvedOptions['source'];
  if (o.rank !== undefined || o.size !== undefined) {
    if (o.rank === undefined || o.size === undefined) throw new RingInvalidArgError('options.rank and options.size must be given together');
    const size = positiveInt('size', o.size);
    const rank = positiveInt('rank', o.rank, 0);
    if (rank >= size) throw new RingInvalidArgError(`options.rank must be in 0..${size - 1}, got ${rank}`);
    d = { source: 'single', rank, size, localRank: o.localRank ?? rank, localSize: o.localSize ?? size, hostStore: false };
    source = 'options';
  } else {
    d = discover(env);
    source = d.source;
  }
  let store = d.store;
  if (o.store !== undefined) {
    if (typeof o.store !== 'string') throw new RingInvalidArgError(`options.store must be 'host:port' or 'file:///dir', got ${typeof o.store}`);
    store = parseStoreAddress(o.store, 'options.store');
  }
  if (d.size > 1 && !store) {
    throw new RingInvalidArgError(
      `rank ${d.rank} of ${d.size}: no rendezvous store: pass options.store ('host:port' or 'file:///dir') or set MASTER_ADDR/MASTER_PORT or RINGREDUCE_STORE`,
    );
  }
  const fileStore = store !== undefined && 'dir' in store;
  if (fileStore && o.hostStore) throw new RingInvalidArgError('options.hostStore cannot be true with a file:// store (there is no server to host)');
  const hostStore = fileStore ? false : (o.hostStore ?? (source === 'options' ? d.rank === 0 : d.hostStore));
  const token = o.token ?? t.token;
  if (token !== undefined && (typeof token !== 'string' || token.length === 0)) {
    throw new RingInvalidArgError('options.token must be a non-empty string');
  }
  const chunkBytes = positiveInt('chunkBytes', o.chunkBytes ?? t.chunkBytes ?? DEFAULTS.chunkBytes, 8);
  if (chunkBytes > 64 << 20) throw new RingInvalidArgError(`options.chunkBytes must be at most 64 MiB, got ${chunkBytes}`);
  const timeoutMs = o.timeoutMs ?? t.timeoutMs ?? DEFAULTS.timeoutMs;
  if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0) || timeoutMs > 2 ** 31 - 1) {
    throw new RingInvalidArgError(`options.timeoutMs must be a number of ms >= 0, got ${JSON.stringify(timeoutMs)}`);
  }
  const startTimeoutMs = o.startTimeoutMs ?? t.startTimeoutMs ?? DEFAULTS.startTimeoutMs;
  if (typeof startTimeoutMs !== 'number' || !(startTimeoutMs > 0) || startTimeoutMs > 2 ** 31 - 1) {
    throw new RingInvalidArgError(`options.startTimeoutMs must be a positive number of ms, got ${JSON.stringify(startTimeoutMs)}`);
  }
  const host = o.host ?? t.advertiseHost;
  if (host !== undefined && (typeof host !== 'string' || host === '')) throw new RingInvalidArgError('options.host must be a non-empty string');
  const iface = o.iface ?? t.iface;
  if (iface !== undefined && (typeof iface !== 'string' || iface === '')) throw new RingInvalidArgError('options.iface must be a non-empty string');
  const tls = o.tls !== undefined ? checkTls(o.tls) : t.tlsFiles ? loadTls(t.tlsFiles) : undefined;
  const hierarchical = o.hierarchical ?? t.hierarchical ?? 'auto';
  if (hierarchical !== 'auto' && typeof hierarchical !== 'boolean') {
    throw new RingInvalidArgError(`options.hierarchical must be 'auto', true or false, got ${JSON.stringify(hierarchical)}`);
  }
  return {
    rank: d.rank,
    size: d.size,
    localRank: positiveInt('localRank', d.localRank, 0),
    localSize: positiveInt('localSize', d.localSize),
    source,
    store,
    hostStore,
    token: token ?? INSECURE_DEFAULT_TOKEN,
    tokenIsDefault: token === undefined,
    host,
    iface,
    tls,
    verbose: t.verbose,
    chunkBytes,
    maxInflight: positiveInt('maxInflight', o.maxInflight ?? DEFAULTS.maxInflight),
    timeoutMs,
    startTimeoutMs,
    logger: o.logger ?? stderrLogger,
    fusionBytes: positiveInt('fusionBytes', o.fusionBytes ?? t.fusionBytes ?? DEFAULTS.fusionBytes, 0),
    stallWarningMs: positiveInt('stallWarningMs', o.stallWarningMs ?? t.stallWarningMs ?? DEFAULTS.stallWarningMs),
    busyPollUs: positiveInt('busyPollUs', o.busyPollUs ?? t.busyPollUs ?? defaultBusyPollUs(d.localSize), 0),
    busyPollIsDefault: o.busyPollUs === undefined && t.busyPollUs === undefined,
    busyPollBackoff: bool('busyPollBackoff', o.busyPollBackoff ?? t.busyPollBackoff ?? false),
    sharedMemory: bool('sharedMemory', o.sharedMemory ?? t.sharedMemory ?? DEFAULTS.sharedMemory),
    earlyBytes: positiveInt('earlyBytes', o.earlyBytes ?? t.earlyBytes ?? Math.max(DEFAULTS.earlyBytes, chunkBytes), chunkBytes),
    hierarchical: hierarchical === 'auto' ? 'auto' : hierarchical ? 'on' : 'off',
    smallOps: smallOpsOption(o.smallOps ?? t.smallOps ?? DEFAULTS.smallOps),
    smallOpsRadix: positiveInt('smallOpsRadix', o.smallOpsRadix ?? DEFAULTS.smallOpsRadix, 2),
    psServers: t.psServers ?? 0,
  };
}

function smallOpsOption(v: unknown): SmallOps {
  if (!(SMALL_OPS as readonly unknown[]).includes(v)) throw new RingInvalidArgError(`options.smallOps must be 'ring', 'direct' or 'auto', got ${JSON.stringify(v)}`);
  return v as SmallOps;
}

function checkTls(t: TlsPem): TlsPem {
  if (t === null || typeof t !== 'object') throw new RingInvalidArgError('options.tls must be an object { cert, key, ca? }');
  for (const k of ['cert', 'key'] as const) {
    if (typeof t[k] !== 'string' || t[k] === '') throw new RingInvalidArgError(`options.tls.${k} must be a non-empty PEM string`);
  }
  if (t.ca !== undefined && (typeof t.ca !== 'string' || t.ca === '')) throw new RingInvalidArgError('options.tls.ca must be a PEM string');
  return t.ca === undefined ? { cert: t.cert, key: t.key } : { cert: t.cert, key: t.key, ca: t.ca };
}

/** Reads the PEM files named by RINGREDUCE_TLS_CERT / _KEY / _CA. */
function loadTls(files: { cert: string; key: string; ca?: string }): TlsPem {
  const read = (name: string, path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (e) {
      throw new RingInvalidArgError(`${name}: cannot read '${path}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const pem: TlsPem = { cert: read('RINGREDUCE_TLS_CERT', files.cert), key: read('RINGREDUCE_TLS_KEY', files.key) };
  if (files.ca) pem.ca = read('RINGREDUCE_TLS_CA', files.ca);
  return pem;
}
