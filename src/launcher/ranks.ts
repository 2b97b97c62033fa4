import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { PACKAGE_ROOT } from './layout.js';
import { forwardLines, type Output } from './output.js';
import { UncaughtFolder } from './uncaught.js';
import { groupAlive, killQuietly } from './procgroup.js';
import type { RemoteHello } from './remote-protocol.js';

/**
 * One rank's process: spawned in its own process group, its output forwarded, its end observed.
 *
 * `detached: true` makes the rank the leader of a new process group (and session) whose id is its
 * pid, so `kill(-pid)` reaches everything it started and did not move elsewhere: a shell's
 * children, helper processes, a `sleep` it forked. It also keeps a terminal's Ctrl-C away from the
 * ranks: only ringrun gets it, and ringrun decides how to stop them.
 *
 * A remote rank is the same object around the rsh (ssh) process that runs the bootstrap there
 * (remote.ts). Its signals travel as lines on the bootstrap's stdin; SIGKILL also closes stdin,
 * and if the ssh process is still there REMOTE_KILL_MS later, its local group gets SIGKILL, which
 * ends the session and, with it, the remote rank.
 */

/** How a rank's process ended. */
export type RankExit =
  | { kind: 'exited'; code: number }
  | { kind: 'signaled'; signal: NodeJS.Signals }
  | { kind: 'spawn-failed'; error: NodeJS.ErrnoException };

/** How a process that ran ended: `exited with code 3`, `was killed by signal SIGKILL`. */
export function describeExit(exit: Exclude<RankExit, { kind: 'spawn-failed' }>): string {
  return exit.kind === 'exited' ? `exited with code ${exit.code}` : `was killed by signal ${exit.signal}`;
}

export interface RankSpec {
  rank: number;
  command: string;
  args: readonly string[];
  env: NodeJS.ProcessEnv;
  tagOutput: boolean;
  stdout: Output;
  stderr: Output;
  /** Given: Node's report of an uncaught error on stderr is not forwarded but summarised here in one line. */
  onUncaught?: (summary: string) => void;
  /** A rank on another host: `command`/`args` run the rsh command, `hello` goes to its stdin. */
  remote?: { host: string; hello: RemoteHello };
  /** What its output lines are tagged with (default: the rank number; a parameter server's is ps<k>). */
  tag?: string;
}

/** After a remote SIGKILL: how long the ssh process gets to end by itself before it is killed here. */
export const REMOTE_KILL_MS = 2000;

/** How many of a rank's last stderr lines are kept, to show when it fails. */
export const STDERR_TAIL_LINES = 20;
const TAIL_LINE_CHARS = 1000;

export class RankProcess {
  readonly rank: number;
  /** The remote host, or undefined for a rank on this host. */
  readonly host: string | undefined;
  /** Also the id of its process group; undefined if it never started. */
  readonly pid: number | undefined;
  /** Set once, when the process has exited or failed to start (then `onExit` is called). */
  exit: RankExit | undefined;
  /** Resolves when stderr has ended and its last line is written. */
  readonly stderrDone: Promise<void>;
  /** Resolves when stdout and stderr have ended (every process holding them has closed them). */
  readonly outputDone: Promise<void>;

  /** True once Node's report of an uncaught error on its stderr was summarised (see RankSpec.onUncaught). */
  folded = false;

  private readonly child: ChildProcess | undefined;
  private readonly tail: string[] = [];

  constructor(spec: RankSpec, onExit: (r: RankProcess, exit: RankExit) => void) {
    this.rank = spec.rank;
    this.host = spec.remote?.host;
    let child: ChildProcess | undefined;
    const finish = (e: RankExit) => {
      if (this.exit) return;
      this.exit = e;
      onExit(this, e);
    };

    try {
      child = spawn(spec.command, spec.args, {
        env: spec.env,
        stdio: [spec.remote ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        detached: true,
        shell: false,
      });
    } catch (e) {
      // Most spawn failures arrive as an 'error' event; a few (e.g. E2BIG) are thrown.
      const error = e as NodeJS.ErrnoException;
      process.nextTick(() => finish({ kind: 'spawn-failed', error }));
    }
    this.child = child;
    this.pid = child?.pid;

    if (!child) {
      this.stderrDone = this.outputDone = Promise.resolve();
      return;
    }
    child.once('exit', (code, signal) => {
      finish(signal ? { kind: 'signaled', signal } : { kind: 'exited', code: code ?? 0 });
    });
    // Without a pid the process never started (ENOENT, EACCES...); once started, 'error' can only
    // come from child.kill(), which ringrun does not use.
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (this.pid === undefined) finish({ kind: 'spawn-failed', error });
    });

    if (spec.remote && child.stdin) {
      // A remote end that is gone shows up as the ssh process exiting; a write error here is not news.
      child.stdin.on('error', () => {});
      child.stdin.write(`${JSON.stringify(spec.remote.hello)}\n`);
    }

    const tag = (stream: string) => (spec.tagOutput ? Buffer.from(`[1,${spec.tag ?? spec.rank}]<${stream}>:`) : undefined);
    const stdoutDone = forwardLines(child.stdout!, spec.stdout, tag('stdout'));
    const onUncaught = spec.onUncaught;
    const fold = onUncaught && new UncaughtFolder(join(PACKAGE_ROOT, 'dist'), (summary) => {
      this.folded = true;
      onUncaught(summary);
    });
    this.stderrDone = forwardLines(child.stderr!, spec.stderr, tag('stderr'), (line) => this.remember(line), fold);
    this.outputDone = Promise.all([stdoutDone, this.stderrDone]).then(() => undefined);

    if (this.pid !== undefined) {
      live.add(this);
      installExitHook();
    }
  }

  /** The last stderr lines, oldest first. */
  stderrTail(): readonly string[] {
    return this.tail;
  }

  /**
   * Sends `signal` to the rank's whole process group. Falls back to the rank alone when the group is
   * gone, but only while the rank is unreaped: after that its pid may belong to someone else.
   */
  signal(signal: NodeJS.Signals): void {
    if (this.pid === undefined) return;
    if (this.host !== undefined && (signal === 'SIGTERM' || signal === 'SIGKILL')) return this.signalRemote(signal);
    this.signalGroup(signal);
  }

  /** SIGKILL to the local process group at once (for a remote rank: its ssh, which ends the session). */
  kill(): void {
    if (this.pid !== undefined) this.signalGroup('SIGKILL');
  }

  private signalGroup(signal: NodeJS.Signals): void {
    if (this.pid === undefined) return;
    if (killQuietly(-this.pid, signal)) return;
    if (!this.exit) killQuietly(this.pid, signal);
  }

  private remoteKillTimer: NodeJS.Timeout | undefined;

  private signalRemote(signal: 'SIGTERM' | 'SIGKILL'): void {
    const stdin = this.child?.stdin;
    if (stdin && stdin.writable) stdin.write(`${signal}\n`);
    if (signal !== 'SIGKILL') return;
    stdin?.end();
    if (this.remoteKillTimer) return;
    this.remoteKillTimer = setTimeout(() => {
      if (!this.gone) this.signalGroup('SIGKILL');
    }, REMOTE_KILL_MS);
    this.remoteKillTimer.unref();
  }

  /** True once the rank has exited and no process is left in its group. */
  get gone(): boolean {
    if (!this.exit) return false;
    if (this.pid === undefined || !groupAlive(this.pid)) {
      live.delete(this);
      return true;
    }
    return false;
  }

  /** Stops reading its output (for pipes still held open by a process that escaped its group). */
  abandonOutput(): void {
    this.child?.stdout?.destroy();
    this.child?.stderr?.destroy();
  }

  private remember(line: Buffer): void {
    let s = line.toString('utf8');
    if (s.endsWith('\r')) s = s.slice(0, -1);
    if (s.length > TAIL_LINE_CHARS) s = `${s.slice(0, TAIL_LINE_CHARS)}...`;
    this.tail.push(s);
    if (this.tail.length > STDERR_TAIL_LINES) this.tail.shift();
  }
}

/**
 * Ranks whose group may still hold processes. If ringrun exits by any path that skipped the
 * orderly teardown (an exception, process.exit), the 'exit' hook SIGKILLs them synchronously.
 */
const live = new Set<RankProcess>();
let hookInstalled = false;

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.on('exit', () => {
    for (const r of live) r.kill();
    live.clear();
  });
}
