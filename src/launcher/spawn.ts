import { join } from 'node:path';
import type { Endpoint } from '../rendezvous/store.js';
import type { LaunchConfig } from './args.js';
import { allowedCpus, boundCommand } from './bind.js';
import { rankEnv, serverEnv } from './env.js';
import { jobExports, PACKAGE_ROOT, rshArgv, SERVER_MAIN_PATH, shellQuote, type Slot, type StorePlan } from './layout.js';
import type { Output } from './output.js';
import { RankProcess, type RankExit, type RankSpec } from './ranks.js';
import { BOOTSTRAP_PATH, type RemoteHello } from './remote-protocol.js';

/**
 * Starting a job's processes: the N ranks (the user's command, bound to CPUs here, or through the
 * rsh command and the bootstrap on another host) and the parameter servers (ringreduce's own
 * server script, the same two ways). The layout decided where (layout.ts); job.ts supervises.
 */
export interface SpawnContext {
  config: LaunchConfig;
  /** The environment the processes inherit (ringrun's, or LaunchOptions.env). */
  base: NodeJS.ProcessEnv;
  out: Output;
  err: Output;
  plan: StorePlan;
  storePort: number;
  token: string;
  /** A line from ringrun on its stderr. */
  say(message: string): void;
}

type OnExit = (r: RankProcess, exit: RankExit) => void;

/** The store's address as the processes of `slot` reach it. */
function storeFor(c: SpawnContext, slot: { host: string; local: boolean }): Endpoint {
  return { host: slot.local ? c.plan.local : c.plan.remote.get(slot.host)!, port: c.storePort };
}

/**
 * A process on another host: the rsh command runs the bootstrap there, which gets `run` on its
 * stdin (remote.ts). ringrun's own environment goes to the rsh command (ssh needs SSH_AUTH_SOCK,
 * HOME...), the process's own in the hello.
 */
function remoteProcess(c: SpawnContext, common: Omit<RankSpec, 'command' | 'args' | 'env'>, host: string, run: Omit<RemoteHello, 'v' | 'rank' | 'host' | 'cwd' | 'graceSec'>, onExit: OnExit): RankProcess {
  const hello: RemoteHello = { v: 1, rank: common.rank, host, cwd: process.cwd(), graceSec: c.config.graceSec, ...run };
  const [rsh, ...rshArgs] = rshArgv(c.config, host, `exec node ${shellQuote(join(PACKAGE_ROOT, BOOTSTRAP_PATH))}`);
  return new RankProcess({ ...common, command: rsh, args: rshArgs, env: { ...c.base }, remote: { host, hello } }, onExit);
}

/** The ranks, one per slot in rank order. */
export function spawnRanks(c: SpawnContext, slots: Slot[], onExit: OnExit): RankProcess[] {
  const { np, command, args, tagOutput, startTimeoutSec, verbose } = c.config;
  const exports = jobExports(c.config);
  // Like mpirun: more ranks than CPUs here is allowed, but said once (ranks then share cores, with
  // no binding and no busy polling, and every collective waits for a rank to be scheduled).
  const here = slots.find((s) => s.local);
  const cpus = allowedCpus()?.length;
  if (here && cpus !== undefined && here.localSize > cpus) {
    c.say(
      `warning: ${here.localSize} ranks on this host, which has ${cpus} CPU${cpus === 1 ? '' : 's'} for them: ranks share cores (not bound, no busy polling), ` +
        `so collectives wait for ranks to be scheduled; -np ${cpus} or fewer runs faster`,
    );
  }
  const bindTo = c.config.bindTo ?? 'slice';
  return slots.map((slot, rank) => {
    const job = { worldSize: np, store: storeFor(c, slot), token: c.token, startTimeoutSec, exports, servers: c.config.servers };
    // Without --verbose, a rank's uncaught error is one line from ringrun instead of Node's report.
    const onUncaught = verbose ? undefined : (summary: string) => c.say(`rank ${rank}: ${summary}`);
    const common = { rank, tagOutput, stdout: c.out, stderr: c.err, onUncaught };
    if (!slot.local) return remoteProcess(c, common, slot.host, { env: rankEnv({}, job, rank, slot) as Record<string, string>, command, args, bindTo }, onExit);
    const bound = boundCommand(bindTo, command, args, slot.localRank, slot.localSize, { path: c.base.PATH ?? '' });
    if (verbose) c.say(`rank ${rank}: ${bound.cpus ? `bound to CPUs ${bound.cpus.join(',')}` : `not bound (${bound.why})`}`);
    return new RankProcess({ ...common, command: bound.command, args: bound.args, env: rankEnv(c.base, job, rank, slot) }, onExit);
  });
}

/** The parameter servers (--servers): ringreduce's own server script, not the command. */
export function spawnServers(c: SpawnContext, slots: Array<{ host: string; local: boolean }>, onExit: OnExit): RankProcess[] {
  const { startTimeoutSec, tagOutput, verbose } = c.config;
  const script = join(PACKAGE_ROOT, SERVER_MAIN_PATH);
  return slots.map((slot, k) => {
    const job = { worldSize: c.config.np, store: storeFor(c, slot), token: c.token, startTimeoutSec, exports: jobExports(c.config), servers: slots.length };
    const common = { rank: k, tag: `ps${k}`, tagOutput, stdout: c.out, stderr: c.err };
    if (verbose) c.say(`parameter server ${k}: on ${slot.local ? 'this host' : slot.host}`);
    if (!slot.local) return remoteProcess(c, common, slot.host, { env: serverEnv({}, job, k) as Record<string, string>, command: 'node', args: [script], bindTo: 'none' }, onExit);
    return new RankProcess({ ...common, command: process.execPath, args: [script], env: serverEnv(c.base, job, k) }, onExit);
  });
}
