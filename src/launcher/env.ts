import { formatHost, type Endpoint } from '../rendezvous/store.js';

/**
 * The environment ringrun gives each rank, on top of its own environment and the -x values.
 * The names are torchrun's (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) plus ringrun's own.
 * The job token travels only here, never on a command line, where `ps` would show it.
 */
export const RANK_ENV_NAMES = [
  'RANK',
  'WORLD_SIZE',
  'LOCAL_RANK',
  'LOCAL_WORLD_SIZE',
  'RINGRUN',
  'RINGRUN_STORE',
  'RINGRUN_TOKEN',
  'RINGRUN_START_TIMEOUT',
  'RINGREDUCE_PS_SERVER',
  'RINGREDUCE_PS_SERVERS',
] as const;

export interface JobEnv {
  worldSize: number;
  /** Where ringrun's rendezvous store listens. */
  store: Endpoint;
  token: string;
  startTimeoutSec?: number;
  /** The -x values. */
  exports: ReadonlyMap<string, string>;
  /** Parameter servers of the job (--servers), if any. */
  servers?: number;
}

/**
 * The environment of rank `rank`: a pure function of ringrun's environment and the job. `local`
 * is the rank's place on its host (default: every rank on this host). A remote rank gets
 * `base = {}`: only the job's variables travel, on top of the remote login environment.
 */
export function rankEnv(
  base: NodeJS.ProcessEnv,
  job: JobEnv,
  rank: number,
  local: { localRank: number; localSize: number } = { localRank: rank, localSize: job.worldSize },
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  // A ringrun started from inside another job must not leak the outer job's settings.
  for (const name of RANK_ENV_NAMES) delete env[name];
  for (const [name, value] of job.exports) env[name] = value;
  env.RANK = String(rank);
  env.WORLD_SIZE = String(job.worldSize);
  env.LOCAL_RANK = String(local.localRank);
  env.LOCAL_WORLD_SIZE = String(local.localSize);
  env.RINGRUN = '1';
  env.RINGRUN_STORE = `${formatHost(job.store.host)}:${job.store.port}`;
  env.RINGRUN_TOKEN = job.token;
  if (job.startTimeoutSec !== undefined) env.RINGRUN_START_TIMEOUT = String(job.startTimeoutSec);
  if (job.servers) env.RINGREDUCE_PS_SERVERS = String(job.servers);
  return env;
}

/**
 * The environment of parameter server `k` (ringrun --servers): the job's store, token and -x
 * values like a rank's, its index and the number of servers, and no rank variables (a server is
 * no rank of the workers' world).
 */
export function serverEnv(base: NodeJS.ProcessEnv, job: JobEnv & { servers: number }, k: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const name of RANK_ENV_NAMES) delete env[name];
  for (const [name, value] of job.exports) env[name] = value;
  env.RINGRUN = '1';
  env.RINGRUN_STORE = `${formatHost(job.store.host)}:${job.store.port}`;
  env.RINGRUN_TOKEN = job.token;
  if (job.startTimeoutSec !== undefined) env.RINGRUN_START_TIMEOUT = String(job.startTimeoutSec);
  env.RINGREDUCE_PS_SERVER = String(k);
  env.RINGREDUCE_PS_SERVERS = String(job.servers);
  return env;
}
