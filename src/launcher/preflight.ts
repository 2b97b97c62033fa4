import { spawn } from 'node:child_process';
import { killQuietly } from './procgroup.js';
import { PREFLIGHT_NO_CWD, PREFLIGHT_OK, PREFLIGHT_OLD_NODE } from './remote-protocol.js';

/**
 * Before any rank starts, every remote host must be reachable and able to run the bootstrap:
 * `rsh host node <root>/dist/launcher/remote.js --preflight <cwd>` within the timeout. A host that
 * fails gets one actionable line; ringrun then exits 1 without starting anything.
 */

export interface PreflightResult {
  host: string;
  ok: boolean;
  /** What the host said on success (versions), or what to do about the failure. */
  message: string;
}

export interface PreflightSpec {
  host: string;
  /** The full command line (rsh words, options, host, remote command). */
  argv: string[];
  timeoutSec: number;
  root: string;
  cwd: string;
}

/** Checks still running: if ringrun exits meanwhile (a signal), they go too. */
const running = new Set<number>();
let hooked = false;
function track(pid: number | undefined): void {
  if (pid === undefined) return;
  running.add(pid);
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const p of running) killQuietly(-p, 'SIGKILL');
  });
}

const lastLine = (s: string) =>
  s
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .pop() ?? '';

export function preflightHost(spec: PreflightSpec): Promise<PreflightResult> {
  const { host, argv, timeoutSec } = spec;
  return new Promise((resolve) => {
    let out = '';
    let err = '';
    let timedOut = false;
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    track(child.pid);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid) killQuietly(-child.pid, 'SIGKILL');
    }, timeoutSec * 1000);
    child.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ host, ok: false, message: `cannot run '${argv[0]}' (${e.code ?? e.message}); set --rsh to a command that reaches other hosts` });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (child.pid !== undefined) running.delete(child.pid);
      const said = lastLine(err) || lastLine(out);
      const detail = said ? ` (it said: ${said})` : '';
      if (timedOut) {
        resolve({ host, ok: false, message: `no answer within ${timeoutSec} s: is the host up and reachable with '${argv[0]}'? (--preflight-timeout to wait longer)${detail}` });
      } else if (code === 0 && out.includes(PREFLIGHT_OK)) {
        resolve({ host, ok: true, message: lastLine(out).replace(`${PREFLIGHT_OK} `, '') });
      } else if (code === 255) {
        resolve({ host, ok: false, message: `cannot connect with '${argv[0]}'${detail}; check that 'ssh ${host} true' works without a password` });
      } else if (code === 127) {
        resolve({ host, ok: false, message: `'node' is not on the PATH of a non-interactive shell there${detail}; install Node.js >= 20 or fix PATH in the remote shell's startup file` });
      } else if (code === PREFLIGHT_NO_CWD) {
        resolve({ host, ok: false, message: `the working directory ${spec.cwd} does not exist there; ringrun runs remote ranks in the same directory as on this host` });
      } else if (code === PREFLIGHT_OLD_NODE) {
        resolve({ host, ok: false, message: `node is too old there${detail}` });
      } else if (/Cannot find module|ERR_MODULE_NOT_FOUND/.test(err)) {
        resolve({ host, ok: false, message: `the project is not at ${spec.root} there; install and build it at the same path on every host (like mpirun)` });
      } else {
        resolve({ host, ok: false, message: `the check failed with exit code ${code}${detail}` });
      }
    });
  });
}
