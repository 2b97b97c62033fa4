import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { stderrLogger, type Logger } from '../logger.js';
import { startStoreServer, type StoreServer } from '../rendezvous/store.js';
import type { TlsConfig } from '../rendezvous/store.js';
import { DEFAULT_PREFLIGHT_SEC, DEFAULT_RSH, type LaunchConfig } from './args.js';
import { EXIT_LAUNCHER_ERROR, exitCodeFor, type StopReason } from './exit-codes.js';
import {
  describeHosts,
  describeStore,
  loadTls,
  PACKAGE_ROOT,
  placeServers,
  placeSlots,
  planStore,
  rshArgv,
  shellQuote,
  type StorePlan,
} from './layout.js';
import { Output } from './output.js';
import { summarizeUncaught } from './uncaught.js';
import { preflightHost } from './preflight.js';
import { describeExit, type RankExit, type RankProcess } from './ranks.js';
import { spawnRanks, spawnServers, type SpawnContext } from './spawn.js';
import { BOOTSTRAP_PATH } from './remote-protocol.js';

/**
 * A job: the rendezvous store plus N ranks, supervised until they all succeed or the job stops.
 *
 * The job runs until one of these ends it, and the first one wins (it sets the exit code):
 *   - every rank exits 0                          -> 0
 *   - a rank exits non-zero or is killed          -> its code, or 128 + signal number
 *   - a rank cannot be started                    -> 127 (not found) or 126
 *   - --timeout expires                           -> 124
 *   - ringrun gets SIGINT / SIGTERM / SIGHUP      -> 128 + signal number (130 / 143 / 129)
 * Then, on every path, teardown: SIGTERM to each rank's process group, SIGKILL to what is left after
 * the grace period, and wait until the groups are empty. The store closes last.
 *
 * With hosts (-H / --hostfile), ranks on other hosts run through the rsh command (ssh) and a
 * bootstrap there (remote.ts); before anything starts, each remote host must pass a preflight
 * check, or ringrun exits 1 naming the hosts and what to fix. The store then listens on the
 * address that routes to the remote hosts (or --iface's), and each host's ranks are told the
 * address of the store that routes to them. Those decisions (the job's layout) are in layout.ts,
 * starting the processes in spawn.ts; this file supervises and tears down.
 */

export interface LaunchOptions {
  /** Where rank output and ringrun's messages go (default: process.stdout / process.stderr). */
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** The environment the ranks inherit (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** Stop the job when this process gets SIGINT, SIGTERM or SIGHUP (the CLI does; default false). */
  handleSignals?: boolean;
  /** For the rendezvous store's warnings (default: stderr). */
  logger?: Logger;
}

const TRAPPED_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
/** How long the failed rank's stderr may take to deliver its last lines before they are shown. */
const STDERR_DRAIN_MS = 500;
/** After SIGKILL: how long to wait for the killed processes to disappear. */
const KILL_WAIT_MS = 3000;
/** After every process is gone: how long output may take to arrive before the pipes are dropped. */
const OUTPUT_WAIT_MS = 2000;
const POLL_MS = 25;

/** Runs a job to its end and resolves to ringrun's exit code. Never leaves a rank running. */
export function launch(config: LaunchConfig, options: LaunchOptions = {}): Promise<number> {
  return new Job(config, options).run();
}

class Job {
  private readonly ranks: RankProcess[] = [];
  /**
   * Parameter servers (--servers): supervised like ranks, but they do not decide the job. A server
   * that fails is reported at once (its workers fail by themselves, naming it, and that failure is
   * the job's); they are stopped once every rank has exited.
   */
  private readonly servers: RankProcess[] = [];
  /** With --servers, ranks that failed while the others went on, in order. */
  private readonly lost: Array<{ rank: RankProcess; exit: Exclude<RankExit, { kind: 'spawn-failed' }> }> = [];
  /** A server that failed while ranks were running: the exit code if the ranks all succeed. */
  private serverFailure: number | undefined;
  private readonly out: Output;
  private readonly err: Output;
  private reason: StopReason | undefined;
  /** Set by a second signal: SIGKILL now, skip the rest of the grace period. */
  private escalated = false;
  private end!: () => void;
  /** Resolves when every rank has succeeded or a StopReason is set. */
  private readonly ended = new Promise<void>((resolve) => (this.end = resolve));

  constructor(
    private readonly config: LaunchConfig,
    private readonly options: LaunchOptions,
  ) {
    this.out = new Output(options.stdout ?? process.stdout);
    this.err = new Output(options.stderr ?? process.stderr);
  }

  async run(): Promise<number> {
    const untrap = this.options.handleSignals ? this.trapSignals() : undefined;
    let store: StoreServer | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      const slots = placeSlots(this.config);
      const serverSlots = placeServers(this.config);
      const remoteHosts = [...new Set([...slots, ...serverSlots].filter((s) => !s.local).map((s) => s.host))];
      if (this.config.verbose && this.config.hosts) for (const line of describeHosts(this.config, slots)) this.say(line);
      let tls: TlsConfig | undefined;
      try {
        tls = loadTls(this.config); // before the preflight: a local mistake should not wait for the hosts
      } catch (e) {
        this.say((e as Error).message);
        return EXIT_LAUNCHER_ERROR;
      }
      if (remoteHosts.length > 0 && !(await this.preflight(remoteHosts))) return EXIT_LAUNCHER_ERROR;
      if (this.reason) return exitCodeFor(this.reason);
      let plan: StorePlan;
      try {
        plan = await planStore(this.config, remoteHosts);
      } catch (e) {
        this.say((e as Error).message);
        return EXIT_LAUNCHER_ERROR;
      }
      const token = randomBytes(32).toString('hex');
      try {
        store = await startStoreServer({
          host: plan.listen,
          port: 0,
          token,
          worldSize: this.config.np,
          logger: this.options.logger ?? stderrLogger,
          tls,
        });
      } catch (e) {
        this.say(`cannot start the rendezvous store: ${(e as Error).message}`);
        return EXIT_LAUNCHER_ERROR;
      }
      if (this.config.verbose) for (const line of describeStore(this.config, store.endpoint, plan, tls, slots.some((s) => s.local))) this.say(line);
      // A signal may have arrived while the store was starting: then there is nothing to spawn.
      if (!this.reason) {
        const spawning: SpawnContext = { config: this.config, base: this.options.env ?? process.env, out: this.out, err: this.err, plan, storePort: store.endpoint.port, token, say: (m) => this.say(m) };
        this.ranks.push(...spawnRanks(spawning, slots, (r, exit) => this.onRankExit(r, exit)));
        this.servers.push(...spawnServers(spawning, serverSlots, (r, exit) => this.onServerExit(r, exit)));
        const { timeoutSec } = this.config;
        if (timeoutSec !== undefined) timer = setTimeout(() => this.onTimeout(timeoutSec), timeoutSec * 1000);
        await this.ended;
      }
      clearTimeout(timer);
      await this.reportFailure();
      this.reportLost();
      await this.stopAll();
      await this.drainOutput();
      return this.exitCode();
    } finally {
      clearTimeout(timer);
      // Only reached with ranks alive if ringrun itself threw: kill them rather than orphan them.
      for (const r of this.procs()) if (!r.gone) r.kill();
      untrap?.();
      await store?.close();
      await Promise.all([this.out.flush(), this.err.flush()]);
      this.out.dispose();
      this.err.dispose();
    }
  }

  /** Checks every remote host at once; says what is wrong with each that fails. */
  private async preflight(hosts: string[]): Promise<boolean> {
    const timeoutSec = this.config.preflightTimeoutSec ?? DEFAULT_PREFLIGHT_SEC;
    const cwd = process.cwd();
    const bootstrap = join(PACKAGE_ROOT, BOOTSTRAP_PATH);
    const results = await Promise.all(
      hosts.map((host) =>
        preflightHost({
          host,
          argv: rshArgv(this.config, host, `exec node ${shellQuote(bootstrap)} --preflight ${shellQuote(cwd)}`),
          timeoutSec,
          root: PACKAGE_ROOT,
          cwd,
        }),
      ),
    );
    const failed = results.filter((r) => !r.ok);
    for (const r of results) {
      if (!r.ok) this.say(`host ${r.host}: ${r.message}`);
      else if (this.config.verbose) this.say(`host ${r.host}: ready (${r.message})`);
    }
    if (failed.length > 0) {
      this.say(`${failed.length} of ${hosts.length} remote host${hosts.length === 1 ? '' : 's'} failed the preflight check; no rank was started`);
    }
    return failed.length === 0;
  }

  private onServerExit(r: RankProcess, exit: RankExit): void {
    // Stopping them, or the ranks are done; a server exits 0 by itself once every worker has left.
    if (this.reason || this.ranks.every((x) => x.exit) || (exit.kind === 'exited' && exit.code === 0)) return;
    const where = r.host === undefined ? `(pid ${r.pid})` : `on host ${r.host}`;
    if (exit.kind === 'spawn-failed') {
      if (this.stop({ kind: 'spawn-failed', rank: r.rank, error: exit.error })) {
        this.say(`cannot start parameter server ${r.rank}: ${exit.error.message}`);
      }
      return;
    }
    const how = describeExit(exit);
    this.serverFailure ??= exitCodeFor({ kind: 'rank-failed', rank: r, exit }) || 1;
    this.say(`parameter server ${r.rank} ${where} ${how}; the ranks that use it fail naming it`);
  }

  private onRankExit(r: RankProcess, exit: RankExit): void {
    if (exit.kind !== 'spawn-failed' && this.config.servers && (exit.kind === 'signaled' || exit.code !== 0) && !this.reason) {
      // A parameter-server job goes on without a worker: async and stale modes do; in sync mode
      // the servers fail the others' next step, naming it.
      this.lost.push({ rank: r, exit });
      const how = describeExit(exit);
      this.say(`rank ${r.rank} ${r.host === undefined ? `(pid ${r.pid})` : `on host ${r.host}`} ${how}; the other ranks go on (parameter-server job)`);
      if (this.ranks.every((x) => x.exit)) this.end();
      return;
    }
    if (exit.kind === 'spawn-failed') {
      if (this.stop({ kind: 'spawn-failed', rank: r.rank, error: exit.error })) {
        const cmd = r.host === undefined ? this.config.command : (this.config.rsh ?? DEFAULT_RSH)[0];
        this.say(`cannot start '${cmd}'${r.host === undefined ? '' : ` for rank ${r.rank} on ${r.host}`}: ${describeSpawnError(cmd, exit.error)}`);
        this.sayStopping(`the other ${countRanks(this.running())}`);
      }
    } else if (exit.kind === 'signaled' || exit.code !== 0) {
      this.stop({ kind: 'rank-failed', rank: r, exit }); // reported by reportFailure()
    } else if (this.ranks.every((x) => x.exit)) {
      this.end();
    }
  }

  private onTimeout(timeoutSec: number): void {
    if (this.stop({ kind: 'timeout' })) {
      this.say(`job timed out after ${timeoutSec} s; stopping ${countRanks(this.running())}`);
    }
  }

  private onSignal(signal: NodeJS.Signals): void {
    if (this.stop({ kind: 'signal', signal })) {
      const again = signal === 'SIGINT' ? ' (Ctrl-C again to kill them at once)' : '';
      this.say(`received ${signal}; stopping ${countRanks(this.running())}${again}`);
      return;
    }
    // Already stopping (a second Ctrl-C, or a signal during a teardown): stop waiting, kill now.
    if (this.escalated) return;
    this.escalated = true;
    this.say(`received ${signal} while stopping; sending SIGKILL to every rank`);
    for (const r of this.procs()) r.signal('SIGKILL');
  }

  /** Records the first reason to stop; false if the job is already stopping. */
  private stop(reason: StopReason): boolean {
    if (this.reason) return false;
    this.reason = reason;
    this.end();
    return true;
  }

  /** With --servers: the ranks lost on the way, at the end. */
  private reportLost(): void {
    if (this.lost.length === 0) return;
    const list = this.lost.map(({ rank, exit }) => `rank ${rank.rank} (${exit.kind === 'exited' ? `exit code ${exit.code}` : `signal ${exit.signal}`})`);
    const tail = this.config.allowWorkerLoss ? '; --allow-worker-loss: not a failure of the job' : ' (--allow-worker-loss would let the job succeed without them)';
    this.say(`lost ${countRanks(this.lost)} of ${this.config.np}: ${list.join(', ')}${tail}`);
  }

  private exitCode(): number {
    if (this.reason) return exitCodeFor(this.reason);
    const firstLost = this.lost[0];
    // Without --allow-worker-loss, or with no rank left at all, a lost rank fails the job.
    if (firstLost && (!this.config.allowWorkerLoss || this.lost.length === this.config.np)) {
      return exitCodeFor({ kind: 'rank-failed', rank: firstLost.rank, exit: firstLost.exit });
    }
    // The ranks that remain all succeeded: a server that failed under them is still a failure.
    return this.serverFailure ?? 0;
  }

  /** Every process ringrun started: the ranks and the parameter servers. */
  private procs(): RankProcess[] {
    return [...this.ranks, ...this.servers];
  }

  /** `ringrun: rank 1 (pid 123) exited with code 3`, then the rank's last stderr lines. */
  private async reportFailure(): Promise<void> {
    const reason = this.reason;
    if (reason?.kind !== 'rank-failed') return;
    const r = reason.rank;
    // 'exit' can come before the last bytes of the pipe; give them a moment to arrive.
    await within(r.stderrDone, STDERR_DRAIN_MS);
    const how = describeExit(reason.exit);
    const folded = r.folded ? ' (ringrun --verbose shows its stack)' : '';
    this.say(`${r.host === undefined ? `rank ${r.rank} (pid ${r.pid})` : `rank ${r.rank} on host ${r.host} (local ssh pid ${r.pid})`} ${how}${folded}`);
    const tail = r.stderrTail();
    // An uncaught error: one line naming its code and the user's own file:line, said already when
    // Node's report was folded on its way through (UncaughtFolder); --verbose shows the rank's
    // whole report above and its last stderr lines here.
    const summary = summarizeUncaught(tail, join(PACKAGE_ROOT, 'dist'));
    if (r.folded) {
      // said when it was folded
    } else if (summary && !this.config.verbose) {
      this.say(`rank ${r.rank}: ${summary}`);
    } else if (tail.length === 0) {
      this.say(`rank ${r.rank} wrote nothing to stderr`);
    } else {
      this.say(`last ${tail.length === 1 ? 'stderr line' : `${tail.length} stderr lines`} of rank ${r.rank}:`);
      this.err.write(tail.map((line) => `    ${line}\n`).join(''));
    }
    this.sayStopping(`the other ${countRanks(this.running())}`);
  }

  /**
   * SIGTERM to every process group that still has members (including groups whose rank has exited
   * but left children behind), SIGKILL after the grace period, then wait for the groups to empty.
   */
  private async stopAll(): Promise<void> {
    // Servers outlive their ranks by design: stopped here, without a word.
    const left = this.procs().filter((r) => !r.gone);
    if (left.length === 0) return;
    const ranksLeft = this.ranks.filter((r) => !r.gone);
    if (!this.reason && ranksLeft.length > 0) {
      const which = ranksLeft.map((r) => r.rank).join(', ');
      this.say(`rank${ranksLeft.length === 1 ? '' : 's'} ${which} exited but left processes behind; stopping them`);
    }
    for (const r of left) r.signal('SIGTERM');
    if (await this.waitGone(this.config.graceSec * 1000, () => this.escalated)) return;
    const stubborn = this.procs().filter((r) => !r.gone);
    if (!this.escalated) {
      this.say(`${countRanks(stubborn)} still running ${this.config.graceSec} s after SIGTERM; sending SIGKILL`);
    }
    for (const r of stubborn) r.signal('SIGKILL');
    if (!(await this.waitGone(KILL_WAIT_MS))) {
      // SIGKILL cannot be ignored, and zombies do not count: this is a process stuck in the kernel.
      const stuck = this.procs().filter((r) => !r.gone);
      this.say(`processes of ${countRanks(stuck)} still present ${KILL_WAIT_MS / 1000} s after SIGKILL; giving up on them`);
    }
  }

  /** Polls until every rank's group is empty; false on timeout or when `interrupted()` says so. */
  private async waitGone(ms: number, interrupted: () => boolean = () => false): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.procs().every((r) => r.gone)) return true;
      if (Date.now() >= deadline || interrupted()) return false;
      await delay(POLL_MS);
    }
  }

  /** Waits for the last output; a pipe held open by a process outside its rank's group is dropped. */
  private async drainOutput(): Promise<void> {
    const done = await within(Promise.all(this.procs().map((r) => r.outputDone)), OUTPUT_WAIT_MS);
    if (!done) for (const r of this.procs()) r.abandonOutput();
  }

  /** Ranks that started and have not exited yet. */
  private running(): RankProcess[] {
    return this.ranks.filter((r) => r.pid !== undefined && !r.exit);
  }

  private sayStopping(which: string): void {
    if (this.running().length > 0) this.say(`stopping ${which}`);
  }

  private say(message: string): void {
    this.err.write(`ringrun: ${message}\n`);
  }

  private trapSignals(): () => void {
    const handler = (signal: NodeJS.Signals) => this.onSignal(signal);
    for (const s of TRAPPED_SIGNALS) process.on(s, handler);
    return () => {
      for (const s of TRAPPED_SIGNALS) process.off(s, handler);
    };
  }
}

function describeSpawnError(command: string, e: NodeJS.ErrnoException): string {
  // A script given as the command (ringrun -np 2 examples/allreduce.js) is not found, or not executable.
  const hint = /\.[cm]?[jt]s$/.test(command) ? `: did you mean 'ringrun -np N node ${command}'?` : '';
  if (e.code === 'ENOENT') return `not found${hint}`;
  if (e.code === 'EACCES') return `permission denied${hint}`;
  return e.message;
}

function countRanks(ranks: readonly unknown[]): string {
  return `${ranks.length} rank${ranks.length === 1 ? '' : 's'}`;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves true if `p` settles within `ms`, false otherwise. */
function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    p.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(true);
      },
    );
  });
}
