import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RingInvalidArgError } from './errors.js';

/**
 * Environment discovery: the ONLY module that reads process.env for ringreduce.
 *
 * Who started this process decides where rank and size come from, checked in this order:
 *   ringrun          RINGRUN_STORE (host:port) + RINGRUN_TOKEN + RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE
 *   torchrun-style   RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (Kubernetes jobs too)
 *   Open MPI         OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK / _LOCAL_SIZE
 *   MPICH / PMI      PMI_RANK, PMI_SIZE (local rank: MPI_LOCALRANKID / MPI_LOCALNRANKS)
 *   Slurm            SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (local size from SLURM_TASKS_PER_NODE)
 *   nothing          a single process: rank 0 of 1
 * Also read here: RINGREDUCE_IFACE (advertise that interface's address), RINGREDUCE_TLS_CERT /
 * _KEY / _CA (wss:// with those PEM files), RINGREDUCE_VERBOSE (say which addresses were chosen),
 * RINGREDUCE_HIERARCHICAL (the hierarchical all-reduce across hosts: auto, 1 or 0).
 *
 * Without ringrun, the rendezvous store is at MASTER_ADDR:MASTER_PORT and rank 0 hosts it, or
 * RINGREDUCE_STORE names it: `host:port` (rank 0 hosts it there) or `file:///shared/dir` (a
 * directory every rank can see; nobody hosts anything).
 *
 * The job token (RINGRUN_TOKEN, RINGREDUCE_TOKEN) is a secret: once init() has read it, it leaves
 * process.env (hideToken), so that the processes the user's program starts do not inherit it.
 */
export type Env = Readonly<Record<string, string | undefined>>;

export type LaunchSource = 'ringrun' | 'torchrun' | 'openmpi' | 'pmi' | 'slurm' | 'single';

/** A TCP store (`host:port`, served over WebSocket) or a shared directory (`file:///dir`). */
export type StoreAddress = { host: string; port: number } | { dir: string };

export const isFileStore = (s: StoreAddress | undefined): s is { dir: string } => s !== undefined && 'dir' in s;

export interface Discovered {
  source: LaunchSource;
  rank: number;
  size: number;
  localRank: number;
  localSize: number;
  /** Rendezvous store address, when known. */
  store?: StoreAddress;
  /** True when this process must host the store itself (rank 0 without a launcher-hosted store). */
  hostStore: boolean;
  /** Job token and where it came from. */
  token?: string;
}

export interface EnvTuning {
  startTimeoutMs?: number;
  timeoutMs?: number;
  chunkBytes?: number;
  advertiseHost?: string;
  noNative: boolean;
  token?: string;
  fusionBytes?: number;
  stallWarningMs?: number;
  busyPollUs?: number;
  /** RINGREDUCE_BUSY_POLL_BACKOFF=0: keep polling while the rank waits for a CPU. */
  busyPollBackoff?: boolean;
  sharedMemory?: boolean;
  /** RINGREDUCE_EARLY_BYTES: bytes of frames a rank holds for operations it has not started. */
  earlyBytes?: number;
  /** RINGREDUCE_SMALL_OPS: the route of small operations (see collectives/comm/direct-route.ts). */
  smallOps?: SmallOps;
  /** RINGREDUCE_IFACE: advertise this interface's address. */
  iface?: string;
  /** RINGREDUCE_TLS_CERT / _KEY / _CA: PEM file paths for wss:// links and store. */
  tlsFiles?: { cert: string; key: string; ca?: string };
  /** RINGREDUCE_HIERARCHICAL=auto|1|0 (ringrun --hierarchical): the hierarchical all-reduce across hosts. */
  hierarchical?: 'auto' | boolean;
  /** RINGREDUCE_VERBOSE=1 (ringrun --verbose): say which addresses were chosen, and per link shared memory or socket. */
  verbose: boolean;
  /** RINGREDUCE_PS_SERVERS (ringrun --servers): how many parameter servers the job has (0: none). */
  psServers?: number;
}

/** 1/true/yes/on or 0/false/no/off; undefined when unset. */
function flag(env: Env, name: string): boolean | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const s = v.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(s)) return true;
  if (['0', 'false', 'no', 'off'].includes(s)) return false;
  throw new RingInvalidArgError(`environment variable ${name} must be 1 or 0 (true/false), got '${v}'`);
}

/** 'auto', or a flag (see flag()); undefined when unset. */
function autoOrFlag(env: Env, name: string): 'auto' | boolean | undefined {
  if (env[name]?.trim().toLowerCase() === 'auto') return 'auto';
  try {
    return flag(env, name);
  } catch {
    throw new RingInvalidArgError(`environment variable ${name} must be auto, 1 or 0 (true/false), got '${env[name]}'`);
  }
}

/** Which route small operations take: around the ring, straight to other ranks, or chosen by the layout. */
export type SmallOps = 'ring' | 'direct' | 'auto';
export const SMALL_OPS: readonly SmallOps[] = ['ring', 'direct', 'auto'];

function smallOps(env: Env): SmallOps | undefined {
  const v = env.RINGREDUCE_SMALL_OPS;
  if (v === undefined || v === '') return undefined;
  const s = v.trim().toLowerCase();
  if (!(SMALL_OPS as readonly string[]).includes(s)) {
    throw new RingInvalidArgError(`environment variable RINGREDUCE_SMALL_OPS must be ring, direct or auto, got '${v}'`);
  }
  return s as SmallOps;
}

function int(env: Env, name: string, min: number): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^\s*-?\d+\s*$/.test(v) || Number(v) < min) {
    throw new RingInvalidArgError(`environment variable ${name} must be an integer >= ${min}, got '${v}'`);
  }
  return Number(v);
}

function seconds(env: Env, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new RingInvalidArgError(`environment variable ${name} must be a number of seconds >= 0, got '${v}'`);
  return Math.round(n * 1000);
}

export function parseHostPort(v: string, what: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(v.trim());
  if (!m || Number(m[2]) > 65535) throw new RingInvalidArgError(`${what} must be host:port, got '${v}'`);
  return { host: m[1], port: Number(m[2]) };
}

/**
 * A store address: `file:///abs/dir` (a shared directory), or `host:port` / `tcp://host:port`.
 */
export function parseStoreAddress(v: string, what: string): StoreAddress {
  if (v.startsWith('file:')) {
    let dir: string;
    try {
      dir = fileURLToPath(v);
    } catch (e) {
      throw new RingInvalidArgError(`${what} must be file:///absolute/dir or host:port, got '${v}' (${(e as Error).message})`);
    }
    if (!isAbsolute(dir) || dir === '/') throw new RingInvalidArgError(`${what} must name a directory below /, got '${v}'`);
    return { dir };
  }
  return parseHostPort(v.startsWith('tcp://') ? v.slice(6).replace(/\/$/, '') : v, what);
}

/** Expands Slurm's SLURM_TASKS_PER_NODE ("2(x3),1") and returns the entry of node `nodeId`. */
export function slurmTasksOnNode(spec: string, nodeId: number): number | undefined {
  const counts: number[] = [];
  for (const part of spec.split(',')) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(part.trim());
    if (!m) return undefined;
    for (let i = 0; i < Number(m[2] ?? 1); i++) counts.push(Number(m[1]));
  }
  return counts[nodeId];
}

function masterStore(env: Env, size: number, source: LaunchSource): StoreAddress | undefined {
  if (size <= 1) return undefined;
  if (env.RINGREDUCE_STORE) return parseStoreAddress(env.RINGREDUCE_STORE, 'RINGREDUCE_STORE');
  const addr = env.MASTER_ADDR;
  const port = int(env, 'MASTER_PORT', 1);
  if (!addr || port === undefined) {
    // Name exactly what is missing, and where the ranks came from (a launcher, or the variables by hand).
    const missing = [!addr && 'MASTER_ADDR', port === undefined && 'MASTER_PORT'].filter(Boolean).join(' and ');
    const have = addr ? ` (MASTER_ADDR is '${addr}')` : port !== undefined ? ` (MASTER_PORT is ${port})` : '';
    const from = source === 'torchrun' ? `RANK/WORLD_SIZE say this is one of ${size} ranks` : `${source} started ${size} ranks`;
    throw new RingInvalidArgError(
      `${from}, but ${missing} ${missing.includes(' and ') ? 'are' : 'is'} not set${have}: ` +
        `set both (e.g. MASTER_ADDR=127.0.0.1 MASTER_PORT=29500), set RINGREDUCE_STORE=file:///shared/dir, ` +
        `or start the job with ringrun`,
    );
  }
  if (port > 65535) throw new RingInvalidArgError(`MASTER_PORT must be a port number, got '${env.MASTER_PORT}'`);
  return { host: addr, port };
}

function check(d: Discovered, names: string): Discovered {
  if (d.size < 1) throw new RingInvalidArgError(`${names}: world size must be >= 1, got ${d.size}`);
  if (d.rank < 0 || d.rank >= d.size) throw new RingInvalidArgError(`${names}: rank ${d.rank} is outside 0..${d.size - 1}`);
  if (d.localRank < 0 || d.localSize < 1 || d.localRank >= d.localSize) {
    throw new RingInvalidArgError(`${names}: local rank ${d.localRank} is outside 0..${d.localSize - 1}`);
  }
  return d;
}

/** The variables that may hold the job token, in the order they are read. */
const TOKEN_VARIABLES = ['RINGRUN_TOKEN', 'RINGREDUCE_TOKEN'] as const;
/** Token variables hideToken() took out of process.env, with their values. */
const hidden = new Map<string, string>();

/** The job token in `env`; for process.env, also one that hideToken() took out of it. */
function tokenIn(env: Env): string | undefined {
  for (const name of TOKEN_VARIABLES) {
    const v = env[name] || (env === process.env ? hidden.get(name) : undefined);
    if (v) return v;
  }
  return undefined;
}

/**
 * Takes the job token's variables out of process.env, keeping their values here for a later
 * init() of this process (after shutdown(), or a failed one): children the user's program starts
 * afterwards do not inherit the secret. The comm thread gets the token with its options, not from
 * its environment (which is a copy of process.env made when it starts, after this).
 */
export function hideToken(): void {
  for (const name of TOKEN_VARIABLES) {
    const v = process.env[name];
    if (v === undefined) continue;
    if (v !== '') hidden.set(name, v);
    delete process.env[name];
  }
}

export function discover(env: Env = process.env): Discovered {
  const token = tokenIn(env);
  if (env.RINGRUN_STORE) {
    const size = int(env, 'WORLD_SIZE', 1) ?? 1;
    const rank = int(env, 'RANK', 0) ?? 0;
    return check(
      {
        source: 'ringrun',
        rank,
        size,
        localRank: int(env, 'LOCAL_RANK', 0) ?? rank,
        localSize: int(env, 'LOCAL_WORLD_SIZE', 1) ?? size,
        store: parseHostPort(env.RINGRUN_STORE, 'RINGRUN_STORE'),
        hostStore: false,
        token,
      },
      'RANK/WORLD_SIZE (ringrun)',
    );
  }
  const pick = (
    source: LaunchSource,
    names: string,
    rank: number | undefined,
    size: number | undefined,
    localRank: number | undefined,
    localSize: number | undefined,
  ): Discovered => {
    if (rank === undefined || size === undefined) {
      const [rankVar, short] = names.split(' ')[0].split('/');
      const sizeVar = short.includes('_') ? short : rankVar.replace(/[^_]+$/, short);
      const which = rank === undefined && size === undefined ? `neither ${rankVar} nor ${sizeVar} is` : `${rank === undefined ? rankVar : sizeVar} is not`;
      throw new RingInvalidArgError(`${names}: ${which} set (both are needed: this process's rank and the number of ranks)`);
    }
    const store = masterStore(env, size, source);
    return check(
      { source, rank, size, localRank: localRank ?? 0, localSize: localSize ?? 1, store, hostStore: !!store && !isFileStore(store) && rank === 0, token },
      names,
    );
  };
  if (env.RANK !== undefined || env.WORLD_SIZE !== undefined) {
    return pick('torchrun', 'RANK/WORLD_SIZE', int(env, 'RANK', 0), int(env, 'WORLD_SIZE', 1), int(env, 'LOCAL_RANK', 0), int(env, 'LOCAL_WORLD_SIZE', 1));
  }
  if (env.OMPI_COMM_WORLD_RANK !== undefined) {
    return pick(
      'openmpi',
      'OMPI_COMM_WORLD_RANK/SIZE',
      int(env, 'OMPI_COMM_WORLD_RANK', 0),
      int(env, 'OMPI_COMM_WORLD_SIZE', 1),
      int(env, 'OMPI_COMM_WORLD_LOCAL_RANK', 0),
      int(env, 'OMPI_COMM_WORLD_LOCAL_SIZE', 1),
    );
  }
  if (env.PMI_RANK !== undefined) {
    return pick('pmi', 'PMI_RANK/PMI_SIZE', int(env, 'PMI_RANK', 0), int(env, 'PMI_SIZE', 1), int(env, 'MPI_LOCALRANKID', 0), int(env, 'MPI_LOCALNRANKS', 1));
  }
  if (env.SLURM_PROCID !== undefined && env.SLURM_NTASKS !== undefined) {
    const nodeId = int(env, 'SLURM_NODEID', 0) ?? 0;
    const local = env.SLURM_TASKS_PER_NODE ? slurmTasksOnNode(env.SLURM_TASKS_PER_NODE, nodeId) : undefined;
    return pick('slurm', 'SLURM_PROCID/SLURM_NTASKS', int(env, 'SLURM_PROCID', 0), int(env, 'SLURM_NTASKS', 1), int(env, 'SLURM_LOCALID', 0), local);
  }
  // MASTER_ADDR/MASTER_PORT or RINGREDUCE_STORE without any rank variables: a job was meant, not a single process.
  const meant = ['MASTER_ADDR', 'MASTER_PORT', 'RINGREDUCE_STORE'].filter((v) => env[v]);
  if (meant.length > 0) {
    throw new RingInvalidArgError(
      `${meant.join(' and ')} ${meant.length > 1 ? 'are' : 'is'} set, but no rank variables are (RANK and WORLD_SIZE, or those of mpirun/Slurm): ` +
        `set RANK and WORLD_SIZE on every process (e.g. RANK=0 WORLD_SIZE=2 ...), start the job with ringrun, or unset ${meant.join(' and ')} to run a single process`,
    );
  }
  return { source: 'single', rank: 0, size: 1, localRank: 0, localSize: 1, hostStore: false, token };
}

/** Tuning knobs that may come from the environment (explicit init() options win). */
export function tuning(env: Env = process.env): EnvTuning {
  return {
    startTimeoutMs: seconds(env, 'RINGRUN_START_TIMEOUT') ?? seconds(env, 'RINGREDUCE_START_TIMEOUT'),
    timeoutMs: seconds(env, 'RINGREDUCE_TIMEOUT'),
    chunkBytes: int(env, 'RINGREDUCE_CHUNK_BYTES', 1),
    advertiseHost: env.RINGREDUCE_HOST || undefined,
    noNative: env.RINGREDUCE_NO_NATIVE === '1' || env.RINGREDUCE_NO_NATIVE === 'true',
    token: tokenIn(env),
    fusionBytes: int(env, 'RINGREDUCE_FUSION_THRESHOLD', 0),
    stallWarningMs: seconds(env, 'RINGREDUCE_STALL_WARNING'),
    busyPollUs: int(env, 'RINGREDUCE_BUSY_POLL_US', 0),
    busyPollBackoff: flag(env, 'RINGREDUCE_BUSY_POLL_BACKOFF'),
    sharedMemory: flag(env, 'RINGREDUCE_SHM'),
    earlyBytes: int(env, 'RINGREDUCE_EARLY_BYTES', 0),
    smallOps: smallOps(env),
    iface: env.RINGREDUCE_IFACE || undefined,
    tlsFiles: tlsFiles(env),
    verbose: env.RINGREDUCE_VERBOSE === '1' || env.RINGREDUCE_VERBOSE === 'true',
    hierarchical: autoOrFlag(env, 'RINGREDUCE_HIERARCHICAL'),
    psServers: int(env, 'RINGREDUCE_PS_SERVERS', 0),
  };
}

/** What a parameter server process learns from its environment (see ps/server-main.ts). */
export interface PsServerEnv {
  /** RINGREDUCE_PS_SERVER: this server's index, 0..servers-1. */
  server: number;
  /** RINGREDUCE_PS_SERVERS: how many servers the job has. */
  servers: number;
  /** The job's rendezvous store, as init() reads it: RINGRUN_STORE, RINGREDUCE_STORE, or MASTER_ADDR:MASTER_PORT. */
  store: string;
}

export function psServerEnv(env: Env = process.env): PsServerEnv {
  const servers = int(env, 'RINGREDUCE_PS_SERVERS', 1);
  const server = int(env, 'RINGREDUCE_PS_SERVER', 0);
  if (servers === undefined || server === undefined) {
    throw new RingInvalidArgError(
      'a parameter server needs RINGREDUCE_PS_SERVER (its index, 0..S-1) and RINGREDUCE_PS_SERVERS (S) in its environment (ringrun --servers S sets them)',
    );
  }
  if (server >= servers) throw new RingInvalidArgError(`RINGREDUCE_PS_SERVER must be in 0..${servers - 1} (RINGREDUCE_PS_SERVERS is ${servers}), got ${server}`);
  const port = env.MASTER_PORT;
  const store = env.RINGRUN_STORE || env.RINGREDUCE_STORE || (env.MASTER_ADDR && port ? `${env.MASTER_ADDR}:${port}` : undefined);
  if (!store) {
    throw new RingInvalidArgError('a parameter server needs the job\'s rendezvous store: RINGRUN_STORE (ringrun sets it), RINGREDUCE_STORE, or MASTER_ADDR and MASTER_PORT');
  }
  return { server, servers, store };
}

function tlsFiles(env: Env): EnvTuning['tlsFiles'] {
  const cert = env.RINGREDUCE_TLS_CERT || undefined;
  const key = env.RINGREDUCE_TLS_KEY || undefined;
  const ca = env.RINGREDUCE_TLS_CA || undefined;
  if (!cert && !key && !ca) return undefined;
  if (!cert || !key) {
    throw new RingInvalidArgError(
      `TLS needs both RINGREDUCE_TLS_CERT and RINGREDUCE_TLS_KEY (got ${cert ? 'only the certificate' : key ? 'only the key' : 'only RINGREDUCE_TLS_CA'})`,
    );
  }
  return ca ? { cert, key, ca } : { cert, key };
}
