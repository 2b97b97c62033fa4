import { RANK_ENV_NAMES } from './env.js';

/**
 * ringrun's command line, parsed into a LaunchConfig. Pure: the environment is an argument (it is
 * read for `-x VAR`), nothing is printed, and every mistake is a UsageError naming the option.
 *
 * Options come first; the first word that is not an option (or everything after `--`) starts the
 * command, so `ringrun -np 2 node train.js --lr 0.1` passes `--lr 0.1` to train.js.
 */

export interface LaunchConfig {
  /** How many ranks to start (-np). */
  np: number;
  /** The program every rank runs, and its arguments. */
  command: string;
  args: string[];
  /** Prefix each output line with `[1,rank]<stdout>:` / `[1,rank]<stderr>:` (default on). */
  tagOutput: boolean;
  /** Wall-clock limit for the whole job, in seconds (--timeout). */
  timeoutSec?: number;
  /** Passed to the ranks as RINGRUN_START_TIMEOUT (--start-timeout). */
  startTimeoutSec?: number;
  /** Seconds between SIGTERM and SIGKILL when ranks are stopped (--grace). */
  graceSec: number;
  /** Extra environment for every rank (-x), resolved to values. */
  exports: ReadonlyMap<string, string>;
}

export type ParsedArgs = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: LaunchConfig };

/** A mistake on the command line. ringrun prints it on one line and exits 2. */
export class UsageError extends Error {
  readonly code = 'RINGRUN_ERR_USAGE';
  /** The option at fault as the user spelled it (e.g. '-n', '--timeout'); undefined for a missing command. */
  readonly option: string | undefined;
  constructor(message: string, option?: string) {
    super(message);
    this.option = option;
  }
  override get name(): string {
    return 'UsageError';
  }
}

export const DEFAULT_GRACE_SEC = 5;
/** setTimeout's limit (2^31 - 1 ms), in whole seconds: about 24.8 days. */
export const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

interface Draft {
  np?: number;
  tagOutput: boolean;
  timeoutSec?: number;
  startTimeoutSec?: number;
  graceSec: number;
  exports: Map<string, string>;
}

type ValueOption = (draft: Draft, value: string, name: string, env: NodeJS.ProcessEnv) => void;

const setNp: ValueOption = (d, v, name) => {
  const n = /^[0-9]+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer, got '${v}'`, name);
  d.np = n;
};

const reserved: ReadonlySet<string> = new Set(RANK_ENV_NAMES);

const addExport: ValueOption = (d, v, name, env) => {
  const eq = v.indexOf('=');
  const varName = eq === -1 ? v : v.slice(0, eq);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(varName)) {
    throw new UsageError(`${name} expects VAR or VAR=value, got '${v}'`, name);
  }
  if (reserved.has(varName)) throw new UsageError(`${name} ${varName}: ${varName} is set by ringrun for each rank`, name);
  const value = eq === -1 ? env[varName] : v.slice(eq + 1);
  if (value === undefined) throw new UsageError(`${name} ${varName}: ${varName} is not set`, name);
  d.exports.set(varName, value);
};

/** Options that take a value, as `--opt value` or `--opt=value`. */
const valueOptions: ReadonlyMap<string, ValueOption> = new Map<string, ValueOption>([
  ['-np', setNp],
  ['-n', setNp],
  ['--np', setNp],
  ['--timeout', (d, v, name) => (d.timeoutSec = seconds(v, name, false))],
  ['--start-timeout', (d, v, name) => (d.startTimeoutSec = seconds(v, name, false))],
  ['--grace', (d, v, name) => (d.graceSec = seconds(v, name, true))],
  ['-x', addExport],
]);

/** Options without a value; returning a result ends parsing (help and version win over the rest). */
const flagOptions: ReadonlyMap<string, (d: Draft) => ParsedArgs | void> = new Map<string, (d: Draft) => ParsedArgs | void>([
  ['--tag-output', (d) => void (d.tagOutput = true)],
  ['--no-tag-output', (d) => void (d.tagOutput = false)],
  ['-h', () => ({ kind: 'help' })],
  ['--help', () => ({ kind: 'help' })],
  ['-V', () => ({ kind: 'version' })],
  ['--version', () => ({ kind: 'version' })],
]);

/** A duration in seconds: a plain decimal (no sign, exponent or hex), at most MAX_SECONDS. */
function seconds(v: string, name: string, zeroOk: boolean): number {
  const s = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/.test(v) ? Number(v) : NaN;
  const what = zeroOk ? 'a number of seconds >= 0' : 'a positive number of seconds';
  if (!Number.isFinite(s) || s < 0 || (s === 0 && !zeroOk)) throw new UsageError(`${name} must be ${what}, got '${v}'`, name);
  if (s > MAX_SECONDS) throw new UsageError(`${name} must be at most ${MAX_SECONDS} seconds (about 24 days), got '${v}'`, name);
  return s;
}

export function parseArgs(argv: readonly string[], env: NodeJS.ProcessEnv): ParsedArgs {
  const d: Draft = { tagOutput: true, graceSec: DEFAULT_GRACE_SEC, exports: new Map() };
  let command: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      command = argv.slice(i + 1);
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      command = argv.slice(i);
      break;
    }
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg : arg.slice(0, eq);
    const inline = eq === -1 ? undefined : arg.slice(eq + 1);

    const flag = flagOptions.get(name);
    if (flag) {
      if (inline !== undefined) throw new UsageError(`${name} takes no value, got '${arg}'`, name);
      const done = flag(d);
      if (done) return done;
      continue;
    }
    const option = valueOptions.get(name);
    if (!option) throw new UsageError(`unknown option '${arg}'`, name);
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${name} needs a value`, name);
      value = argv[++i];
    }
    option(d, value, name, env);
  }

  if (d.np === undefined) throw new UsageError('-np is required: how many ranks to start', '-np');
  if (command.length === 0 || command[0] === '') {
    throw new UsageError('no command given; usage: ringrun -np N [options] [--] command [args...]');
  }
  const config: LaunchConfig = {
    np: d.np,
    command: command[0],
    args: command.slice(1),
    tagOutput: d.tagOutput,
    graceSec: d.graceSec,
    exports: d.exports,
  };
  if (d.timeoutSec !== undefined) config.timeoutSec = d.timeoutSec;
  if (d.startTimeoutSec !== undefined) config.startTimeoutSec = d.startTimeoutSec;
  return { kind: 'run', config };
}

export function helpText(): string {
  return `Usage: ringrun -np N [options] [--] command [args...]

Starts N ranks of \`command\` on this host, hosts their rendezvous store, tags and
forwards their output, and stops every rank as soon as one of them fails.

Options (a value may also be given as --option=value):
  -np N, -n N, --np N   number of ranks to start (required)
  --tag-output          prefix each output line with [1,RANK]<stdout>: or
                        [1,RANK]<stderr>: (the default)
  --no-tag-output       forward output lines unchanged
  --timeout SEC         wall-clock limit for the whole job; when it expires the
                        ranks are stopped and ringrun exits 124
  --start-timeout SEC   how long ranks may take to find each other; passed to
                        the ranks as RINGRUN_START_TIMEOUT
  --grace SEC           when stopping ranks, wait SEC seconds after SIGTERM
                        before SIGKILL (default ${DEFAULT_GRACE_SEC})
  -x VAR=value          set VAR in every rank's environment
  -x VAR                copy VAR from ringrun's environment to every rank
                        (an error if VAR is not set); -x may be repeated
  --                    end of options: what follows is the command
  -h, --help            print this help and exit
  -V, --version         print the version and the active kernel backend

Environment of each rank (on top of ringrun's own environment and -x):
  RANK, LOCAL_RANK                 this rank, 0..N-1
  WORLD_SIZE, LOCAL_WORLD_SIZE     N (all ranks run on this host)
  RINGRUN_STORE                    host:port of the job's rendezvous store
  RINGRUN_TOKEN                    the job's secret; ranks authenticate with it
  RINGRUN_START_TIMEOUT            seconds, only with --start-timeout
  RINGRUN                          1

Each rank runs in its own process group, and stopping a rank signals the whole
group. On SIGINT, SIGTERM or SIGHUP, ringrun sends SIGTERM to every rank, then
SIGKILL after the grace period; a second Ctrl-C sends SIGKILL at once.

Exit status:
  0              every rank exited 0
  1..255         the exit code of the first rank that failed, or 128+signal if
                 it was killed by a signal (e.g. 137 for SIGKILL)
  1              ringrun itself failed (e.g. the store could not start)
  2              bad command line
  124            --timeout expired
  126            the command could not be started
  127            the command was not found
  129, 130, 143  ringrun received SIGHUP, SIGINT, SIGTERM

Example:
  ringrun -np 4 --timeout 3600 -x OMP_NUM_THREADS=1 node train.js --epochs 10
`;
}
