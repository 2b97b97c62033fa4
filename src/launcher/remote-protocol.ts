import type { BindTo } from './bind.js';
/**
 * What ringrun sends a remote rank's bootstrap (remote.ts) over the remote command's stdin, so that
 * the job token and the environment never appear on a command line (`ps` on either host would
 * show it; ssh passes its command line to the remote shell as text).
 *
 *   line 1            a RemoteHello as JSON
 *   later lines       'SIGTERM' or 'SIGKILL': signal the rank's process group
 *   end of input      ringrun is gone or stopping the job: SIGTERM the rank's group, SIGKILL
 *                     after graceSec, then exit. Closing the ssh session closes the input, so a
 *                     remote rank cannot outlive its ringrun.
 *
 * The bootstrap exits with the rank's exit code, or 128 + the signal number if it was killed.
 */
export interface RemoteHello {
  v: 1;
  rank: number;
  /** The host name as ringrun knows it, for messages. */
  host: string;
  cwd: string;
  /** Set on top of the remote login environment. */
  env: Record<string, string>;
  command: string;
  args: string[];
  graceSec: number;
  /** CPU binding on the remote host (see bind.ts), by its LOCAL_RANK and LOCAL_WORLD_SIZE. */
  bindTo?: BindTo;
}

export type RemoteControl = 'SIGTERM' | 'SIGKILL';

/** The bootstrap's path relative to the package root, the same on every host. */
export const BOOTSTRAP_PATH = 'dist/launcher/remote.js';

/** `--preflight CWD`: prints PREFLIGHT_OK plus versions and exits 0, or explains and exits non-zero. */
export const PREFLIGHT_OK = 'ringrun-remote: ok';
/** Exit code of the preflight when CWD does not exist there. */
export const PREFLIGHT_NO_CWD = 3;
/** Exit code of the preflight when node is too old. */
export const PREFLIGHT_OLD_NODE = 4;
