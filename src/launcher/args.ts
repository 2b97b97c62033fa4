import { BIND_TO_VALUES, type BindTo } from './bind.js';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { RANK_ENV_NAMES } from './env.js';
import { HostSpecError, mergeHosts, parseHostfile, parseHostList, totalSlots, type HostSlots } from './hosts.js';

/**
 * ringrun's command line, parsed into a LaunchConfig. Pure: the environment is an argument (it is
 * read for `-x VAR`), nothing is printed, and every mistake is a UsageError naming the option.
 *
 * Options come first; the first word that is not an option (or everything after `--`) starts the
 * command, so `ringrun -np 2 node train.js --lr 0.1` passes `--lr 0.1` to train.js.
 * `--hostfile` is read through `readFile` (an argument too, for tests).
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
  /** Hosts and their slots (-H / --hostfile); absent: every rank on this host. */
  hosts?: HostSlots[];
  /** How remote ranks are started (--rsh, split on spaces; default DEFAULT_RSH). */
  rsh?: string[];
  /** -p / --ssh-port and -i / --ssh-identity, passed to the rsh command as `-p N` / `-i FILE`. */
  sshPort?: number;
  sshIdentity?: string;
  /** Seconds each remote host gets to answer the preflight check (--preflight-timeout). */
  preflightTimeoutSec?: number;
  /** The network interface ranks advertise and the store listens on (--iface). */
  iface?: string;
  /** Print the hosts, the store address and each rank's chosen address (--verbose). */
  verbose?: boolean;
  /** TLS files (--tls-cert, --tls-key, --tls-ca), absolute paths. */
  tls?: { cert: string; key: string; ca?: string };
  /** CPU binding of each host's ranks (--bind-to, see bind.ts); default 'slice'. */
  bindTo?: BindTo;
  /** The hierarchical all-reduce across hosts (--hierarchical[=auto|on|off]; RINGREDUCE_HIERARCHICAL in ranks). */
  hierarchical?: 'auto' | 'on' | 'off';
  /** Parameter servers to start next to the ranks (--servers; 0 or absent: none). */
  servers?: number;
  /** With servers: a rank that fails does not fail the job if the others succeed (--allow-worker-loss). */
  allowWorkerLoss?: boolean;
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
export const DEFAULT_PREFLIGHT_SEC = 15;
/** Without a terminal and without password prompts: a host that wants one fails the preflight. */
export const DEFAULT_RSH: readonly string[] = ['ssh', '-T', '-o', 'BatchMode=yes'];
/** setTimeout's limit (2^31 - 1 ms), in whole seconds: about 24.8 days. */
export const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/** The command line as parsed so far: LaunchConfig's fields, some still raw (hosts, TLS files). */
interface Draft extends Omit<LaunchConfig, 'np' | 'command' | 'args' | 'exports' | 'hosts' | 'tls'> {
  np?: number;
  exports: Map<string, string>;
  hostList?: HostSlots[];
  hostfile?: { name: string; path: string };
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
}

type ValueOption = (draft: Draft, value: string, name: string, env: NodeJS.ProcessEnv) => void;

const addHosts: ValueOption = (d, v, name) => {
  try {
    d.hostList = [...(d.hostList ?? []), ...parseHostList(v)];
  } catch (e) {
    if (e instanceof HostSpecError) throw new UsageError(`${name} ${e.message}`, name);
    throw e;
  }
};

const nonEmpty = (v: string, name: string, what: string): string => {
  if (v.trim() === '') throw new UsageError(`${name} expects ${what}, got an empty value`, name);
  return v;
};

const setPort: ValueOption = (d, v, name) => {
  const n = /^[0-9]+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > 65535) throw new UsageError(`${name} must be a port number (1-65535), got '${v}'`, name);
  d.sshPort = n;
};

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
  ['-H', addHosts],
  ['--host', addHosts],
  ['--hostfile', (d, v, name) => (d.hostfile = { name, path: nonEmpty(v, name, 'a file name') })],
  ['--rsh', (d, v, name) => (d.rsh = nonEmpty(v, name, 'a command, e.g. "ssh -o StrictHostKeyChecking=no"').trim().split(/\s+/))],
  ['-p', setPort],
  ['--ssh-port', setPort],
  ['-i', (d, v, name) => (d.sshIdentity = nonEmpty(v, name, 'a key file'))],
  ['--ssh-identity', (d, v, name) => (d.sshIdentity = nonEmpty(v, name, 'a key file'))],
  ['--preflight-timeout', (d, v, name) => (d.preflightTimeoutSec = seconds(v, name, false))],
  [
    '--bind-to',
    (d, v, name) => {
      if (!BIND_TO_VALUES.includes(v as BindTo)) throw new UsageError(`${name} must be one of ${BIND_TO_VALUES.join(', ')}, got '${v}'`, name);
      d.bindTo = v as BindTo;
    },
  ],
  ['--iface', (d, v, name) => (d.iface = interfaceName(v, name))],
  [
    '--servers',
    (d, v, name) => {
      const n = /^[0-9]+$/.test(v) ? Number(v) : NaN;
      if (!Number.isSafeInteger(n) || n < 1 || n > 1024) throw new UsageError(`${name} must be a number of parameter servers (1-1024), got '${v}'`, name);
      d.servers = n;
    },
  ],
  ['--tls-cert', (d, v, name) => (d.tlsCert = nonEmpty(v, name, 'a PEM file'))],
  ['--tls-key', (d, v, name) => (d.tlsKey = nonEmpty(v, name, 'a PEM file'))],
  ['--tls-ca', (d, v, name) => (d.tlsCa = nonEmpty(v, name, 'a PEM file'))],
]);

function interfaceName(v: string, name: string): string {
  if (!/^[A-Za-z0-9_.:@-]{1,64}$/.test(v)) throw new UsageError(`${name} expects a network interface name such as eth0, got '${v}'`, name);
  return v;
}

/**
 * Options whose value is optional: --option=value, or --option followed by one of its values (any
 * other word starts the command).
 */
const OPTIONAL_VALUES: ReadonlyMap<string, readonly string[]> = new Map([['--hierarchical', ['auto', 'on', 'off']]]);
const optionalValueOptions: ReadonlyMap<string, (d: Draft, value: string | undefined, name: string) => void> = new Map([
  [
    '--hierarchical',
    (d: Draft, v: string | undefined, name: string) => {
      const modes = ['auto', 'on', 'off'] as const;
      if (v !== undefined && !modes.includes(v as (typeof modes)[number])) throw new UsageError(`${name} takes auto, on or off (e.g. ${name}=off), got '${v}'`, name);
      d.hierarchical = (v ?? 'on') as (typeof modes)[number];
    },
  ],
]);

/** Options without a value; returning a result ends parsing (help and version win over the rest). */
const flagOptions: ReadonlyMap<string, (d: Draft) => ParsedArgs | void> = new Map<string, (d: Draft) => ParsedArgs | void>([
  ['--tag-output', (d) => void (d.tagOutput = true)],
  ['--no-tag-output', (d) => void (d.tagOutput = false)],
  ['--verbose', (d) => void (d.verbose = true)],
  ['--allow-worker-loss', (d) => void (d.allowWorkerLoss = true)],
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

export function parseArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  readFile: (path: string) => string = (path) => readFileSync(path, 'utf8'),
): ParsedArgs {
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

    const optional = optionalValueOptions.get(name);
    if (optional) {
      const next = inline === undefined && OPTIONAL_VALUES.get(name)!.includes(argv[i + 1]) ? argv[++i] : undefined;
      optional(d, inline ?? next, name);
      continue;
    }
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

  const hosts = resolveHosts(d, readFile);
  if (hosts) {
    const slots = totalSlots(hosts);
    if (d.np === undefined) d.np = slots;
    else if (d.np > slots) {
      const from = d.hostfile ? d.hostfile.name : '-H';
      throw new UsageError(`-np ${d.np} is more than the ${slots} slot${slots === 1 ? '' : 's'} given by ${from}`, '-np');
    }
  }
  if (d.np === undefined) throw new UsageError('-np is required: how many ranks to start (or give hosts with -H / --hostfile)', '-np');
  if (command.length === 0 || command[0] === '') {
    throw new UsageError('no command given; usage: ringrun -np N [options] [--] command [args...]');
  }
  if ((d.tlsCert === undefined) !== (d.tlsKey === undefined)) {
    const missing = d.tlsCert === undefined ? '--tls-cert' : '--tls-key';
    throw new UsageError(`${missing} is needed too: TLS takes both --tls-cert and --tls-key`, missing);
  }
  if (d.tlsCa !== undefined && d.tlsCert === undefined) throw new UsageError('--tls-ca needs --tls-cert and --tls-key', '--tls-ca');
  if (d.allowWorkerLoss && d.servers === undefined) {
    throw new UsageError('--allow-worker-loss needs --servers: only a parameter-server job goes on without a rank', '--allow-worker-loss');
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
  if (hosts) config.hosts = hosts;
  if (d.rsh) config.rsh = d.rsh;
  if (d.sshPort !== undefined) config.sshPort = d.sshPort;
  if (d.sshIdentity !== undefined) config.sshIdentity = d.sshIdentity;
  if (d.preflightTimeoutSec !== undefined) config.preflightTimeoutSec = d.preflightTimeoutSec;
  if (d.iface !== undefined) config.iface = d.iface;
  if (d.verbose) config.verbose = true;
  if (d.bindTo !== undefined) config.bindTo = d.bindTo;
  if (d.hierarchical !== undefined) config.hierarchical = d.hierarchical;
  if (d.servers !== undefined) config.servers = d.servers;
  if (d.allowWorkerLoss) config.allowWorkerLoss = true;
  if (d.tlsCert !== undefined && d.tlsKey !== undefined) {
    // Absolute, so they mean the same file on every host (like the working directory).
    config.tls = { cert: resolve(d.tlsCert), key: resolve(d.tlsKey) };
    if (d.tlsCa !== undefined) config.tls.ca = resolve(d.tlsCa);
  }
  return { kind: 'run', config };
}

/** -H and --hostfile, parsed and merged; undefined when neither is given. */
function resolveHosts(d: Draft, readFile: (path: string) => string): HostSlots[] | undefined {
  if (d.hostList && d.hostfile) throw new UsageError(`-H and ${d.hostfile.name} cannot be combined: give the hosts one way`, '-H');
  if (d.hostList) return mergeHosts(d.hostList);
  if (!d.hostfile) return undefined;
  const { name, path } = d.hostfile;
  let text: string;
  try {
    text = readFile(path);
  } catch (e) {
    throw new UsageError(`${name} ${path}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, name);
  }
  try {
    return mergeHosts(parseHostfile(text));
  } catch (e) {
    if (e instanceof HostSpecError) throw new UsageError(`${name} ${path}: ${e.message}`, name);
    throw e;
  }
}
