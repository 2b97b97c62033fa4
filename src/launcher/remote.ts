import { boundCommand } from './bind.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { groupAlive, killQuietly } from './procgroup.js';
import { PREFLIGHT_NO_CWD, PREFLIGHT_OK, PREFLIGHT_OLD_NODE, type RemoteHello } from './remote-protocol.js';

/**
 * The bootstrap of a remote rank: `ringrun -H` runs `node <root>/dist/launcher/remote.js` on each
 * remote host over ssh (or --rsh) and writes a RemoteHello to its stdin (see remote-protocol.ts).
 * It starts the rank in its own process group with the environment and working directory it was
 * given, forwards its output (the rank writes straight to the ssh channel), obeys the signals
 * ringrun sends, and stops the rank when its input ends: when ringrun closes it, or when the ssh
 * session dies.
 */

const say = (m: string) => process.stderr.write(`ringrun-remote: ${m}\n`);
const signalCode = (s: NodeJS.Signals) => 128 + (constants.signals[s] ?? 0);
// A broken ssh channel must not crash the bootstrap before it has stopped its rank.
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});

if (process.argv[2] === '--preflight') preflight(process.argv[3]);
else run();

function preflight(cwd: string | undefined): void {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 20) {
    say(`node ${process.version} on ${hostname()} is too old: ringreduce needs node >= 20`);
    process.exit(PREFLIGHT_OLD_NODE);
  }
  if (cwd !== undefined && !existsSync(cwd)) {
    say(`the working directory ${cwd} does not exist on ${hostname()}`);
    process.exit(PREFLIGHT_NO_CWD);
  }
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version?: string };
  // The library itself must be importable, not only this file.
  const lib = fileURLToPath(new URL('../index.js', import.meta.url));
  if (!existsSync(lib)) {
    say(`${lib} is missing on ${hostname()}: build the project there (npx tsc -p tsconfig.build.json)`);
    process.exit(1);
  }
  process.stdout.write(`${PREFLIGHT_OK} node=${process.version} ringreduce=${pkg.version ?? '?'} host=${hostname()}\n`);
}

function run(): void {
  let buffered = '';
  let child: ChildProcess | undefined;
  let hello: RemoteHello | undefined;
  let stopping = false;
  /** ringrun asked for a signal: its arrival is no news to report. */
  let requested = false;

  const stop = (graceSec: number) => {
    if (stopping || !child?.pid) return;
    stopping = true;
    killQuietly(-child.pid, 'SIGTERM');
    const t = setTimeout(() => child?.pid && killQuietly(-child.pid, 'SIGKILL'), graceSec * 1000);
    t.unref();
  };

  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!hello) {
        try {
          hello = JSON.parse(line) as RemoteHello;
        } catch {
          say('the first line of input is not the job description ringrun sends; exiting');
          process.exit(1);
        }
        child = start(hello);
      } else if ((line === 'SIGTERM' || line === 'SIGKILL') && child?.pid) {
        requested = true;
        killQuietly(-child.pid, line);
      }
    }
  });
  // ringrun closed our input, or the ssh session is gone: the rank must not outlive it.
  const lost = () => {
    if (!child) process.exit(1);
    stop(hello?.graceSec ?? 5);
  };
  process.stdin.on('end', lost);
  process.stdin.on('error', lost);
  for (const s of ['SIGHUP', 'SIGTERM', 'SIGINT'] as const) process.on(s, lost);

  function start(h: RemoteHello): ChildProcess {
    try {
      process.chdir(h.cwd);
    } catch (e) {
      say(`rank ${h.rank}: cannot change to ${h.cwd} on ${hostname()}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      process.exit(1);
    }
    const bound = boundCommand(h.bindTo ?? 'none', h.command, h.args, Number(h.env.LOCAL_RANK ?? 0), Number(h.env.LOCAL_WORLD_SIZE ?? 1));
    const c = spawn(bound.command, bound.args, {
      env: { ...process.env, ...h.env },
      stdio: ['ignore', 'inherit', 'inherit'],
      detached: true,
    });
    c.once('error', (e: NodeJS.ErrnoException) => {
      if (c.pid !== undefined) return;
      const how = e.code === 'ENOENT' ? 'not found' : e.code === 'EACCES' ? 'permission denied' : e.message;
      say(`rank ${h.rank}: cannot start '${h.command}' on ${hostname()}: ${how}`);
      process.exit(e.code === 'ENOENT' ? 127 : 126);
    });
    c.once('exit', (code, signal) => {
      if (signal && !stopping && !requested) say(`rank ${h.rank} (pid ${c.pid} on ${hostname()}) was killed by signal ${signal}`);
      void finish(c.pid!, signal ? signalCode(signal) : (code ?? 0), h.graceSec);
    });
    return c;
  }

  /** Whatever the rank left in its group goes too (SIGTERM, SIGKILL after the grace period), then exit. */
  async function finish(pgid: number, code: number, graceSec: number): Promise<void> {
    if (groupAlive(pgid)) {
      killQuietly(-pgid, 'SIGTERM');
      const deadline = Date.now() + graceSec * 1000;
      while (groupAlive(pgid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      killQuietly(-pgid, 'SIGKILL');
    }
    process.exit(code);
  }
}
