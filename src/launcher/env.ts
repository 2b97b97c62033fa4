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
] as const;

export interface JobEnv {
  worldSize: number;
  /** Where ringrun's rendezvous store listens. */
  store: Endpoint;
  token: string;
  startTimeoutSec?: number;
  /** The -x values. */
  exports: ReadonlyMap<string, string>;
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
  return env;
}
