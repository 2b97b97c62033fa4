import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_GRACE_SEC, parseArgs, UsageError, type LaunchConfig } from '../src/launcher/args.js';
import { helpText } from '../src/launcher/help.js';
import { rankEnv } from '../src/launcher/env.js';
import { isThisHost, parseHostfile, placeRanks } from '../src/launcher/hosts.js';
import { launch } from '../src/launcher/job.js';
import { shellQuote } from '../src/launcher/layout.js';
import { preflightHost } from '../src/launcher/preflight.js';
import { LineSplitter } from '../src/launcher/output.js';
import { alive } from './helpers/procs.js';

/**
 * ringrun, from its argument parser to real jobs. The process tests run the built binary
 * (`node bin/ringrun.js`, so build first) on small fixtures that need no ring: they print their
 * environment, or sleep with a grandchild in their process group and record every pid, so each
 * test can check afterwards that nothing it started is left alive.
 */

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'bin', 'ringrun.js');
const fixture = (name: 'env' | 'sleeper' | 'crash') => join(root, 'test', 'fixtures', `launcher-${name}.mjs`);
const pkgVersion = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

/** Per-test deadline for one ringrun run; the slowest expected run takes ~2 s. */
const RUN_DEADLINE_MS = 20_000;
/** How long processes may take to disappear after ringrun exits (it waits for them, so ~0). */
const GONE_WITHIN_MS = 3_000;

function parseOk(argv: string[], env: NodeJS.ProcessEnv = {}): LaunchConfig {
  const r = parseArgs(argv, env);
  if (r.kind !== 'run') throw new Error(`expected a run, got ${r.kind}`);
  return r.config;
}

function parseError(argv: string[], env: NodeJS.ProcessEnv = {}): UsageError {
  try {
    parseArgs(argv, env);
  } catch (e) {
    if (e instanceof UsageError) return e;
    throw e;
  }
  throw new Error(`parseArgs(${JSON.stringify(argv)}) did not throw`);
}

describe('parseArgs', () => {
  it('parses a minimal command line with the defaults', () => {
    expect(parseOk(['-np', '4', 'node', 'train.js'])).toEqual({
      np: 4,
      command: 'node',
      args: ['train.js'],
      tagOutput: true,
      graceSec: DEFAULT_GRACE_SEC,
      exports: new Map(),
    });
  });

  it.each([
    [['-np', '3'], 3],
    [['-n', '3'], 3],
    [['--np', '3'], 3],
    [['-np=3'], 3],
    [['-n=5'], 5],
    [['--np=12'], 12],
    [['-np', '2', '-np', '7'], 7],
  ])('accepts %j as the rank count', (opts, np) => {
    expect(parseOk([...opts, 'cmd']).np).toBe(np);
  });

  it('accepts every option in both the separate and the = form', () => {
    const spaced = parseOk(['-np', '2', '--timeout', '5', '--start-timeout', '30', '--grace', '0', '--no-tag-output', 'cmd']);
    const joined = parseOk(['-np=2', '--timeout=5', '--start-timeout=30', '--grace=0', '--no-tag-output', 'cmd']);
    for (const c of [spaced, joined]) {
      expect(c).toMatchObject({ np: 2, timeoutSec: 5, startTimeoutSec: 30, graceSec: 0, tagOutput: false, command: 'cmd' });
    }
    expect(parseOk(['-np', '1', '--timeout', '1.5', '--grace', '.25', 'cmd'])).toMatchObject({ timeoutSec: 1.5, graceSec: 0.25 });
    expect(parseOk(['-np', '1', 'cmd']).timeoutSec).toBeUndefined();
    expect(parseOk(['-np', '1', 'cmd']).startTimeoutSec).toBeUndefined();
  });

  it('lets the last of --tag-output / --no-tag-output win', () => {
    expect(parseOk(['-np', '1', '--no-tag-output', '--tag-output', 'cmd']).tagOutput).toBe(true);
    expect(parseOk(['-np', '1', '--tag-output', '--no-tag-output', 'cmd']).tagOutput).toBe(false);
  });

  it('collects -x values, setting or copying variables', () => {
    const env = { HOME_DIR: '/home/me', EMPTY: '' };
    const c = parseOk(['-np', '1', '-x', 'FOO=bar', '-x=EQ=a=b', '-x', 'HOME_DIR', '-x', 'EMPTY', '-x', 'BLANK=', 'cmd'], env);
    expect([...c.exports]).toEqual([
      ['FOO', 'bar'],
      ['EQ', 'a=b'],
      ['HOME_DIR', '/home/me'],
      ['EMPTY', ''],
      ['BLANK', ''],
    ]);
  });

  it('hands everything from the first non-option word to the command', () => {
    const c = parseOk(['-np', '2', 'node', 'script.js', '--foo', '-np', '9', '--', '-x']);
    expect(c.np).toBe(2);
    expect([c.command, ...c.args]).toEqual(['node', 'script.js', '--foo', '-np', '9', '--', '-x']);
  });

  it('treats everything after -- as the command, even words that look like options', () => {
    const c = parseOk(['-np', '2', '--', '--weird-program', '--help']);
    expect([c.command, ...c.args]).toEqual(['--weird-program', '--help']);
  });

  it('answers --help / -h and --version / -V', () => {
    expect(parseArgs(['--help'], {})).toEqual({ kind: 'help' });
    expect(parseArgs(['-h'], {})).toEqual({ kind: 'help' });
    expect(parseArgs(['-np', '2', '--version'], {})).toEqual({ kind: 'version' });
    expect(parseArgs(['-V'], {})).toEqual({ kind: 'version' });
    // After the command, --help belongs to the command.
    expect(parseArgs(['-np', '2', 'cmd', '--help'], {}).kind).toBe('run');
  });

  it.each<[string[], string | undefined, string]>([
    [['-np', 'x', 'cmd'], '-np', "-np must be a positive integer, got 'x'"],
    [['-n', '0', 'cmd'], '-n', "-n must be a positive integer, got '0'"],
    [['--np=-1', 'cmd'], '--np', "--np must be a positive integer, got '-1'"],
    [['-np', '1.5', 'cmd'], '-np', 'positive integer'],
    [['-np'], '-np', '-np needs a value'],
    [['cmd'], '-np', '-np is required'],
    [['-np', '2'], undefined, 'no command given'],
    [['-np', '2', '--'], undefined, 'no command given'],
    [['-np', '2', ''], undefined, 'no command given'],
    [['-np', '2', '--bogus', 'cmd'], '--bogus', "unknown option '--bogus'"],
    [['-np', '2', '-npx', 'cmd'], '-npx', "unknown option '-npx'"],
    [['-np', '2', '--timeout', '-1', 'cmd'], '--timeout', "--timeout must be a positive number of seconds, got '-1'"],
    [['-np', '2', '--timeout=0', 'cmd'], '--timeout', 'positive number'],
    [['-np', '2', '--timeout', 'soon', 'cmd'], '--timeout', "got 'soon'"],
    [['-np', '2', '--timeout', '1e3', 'cmd'], '--timeout', "got '1e3'"],
    [['-np', '2', '--timeout', '99999999', 'cmd'], '--timeout', '--timeout must be at most'],
    [['-np', '2', '--start-timeout', '-5', 'cmd'], '--start-timeout', '--start-timeout must be a positive number'],
    [['-np', '2', '--start-timeout'], '--start-timeout', '--start-timeout needs a value'],
    [['-np', '2', '--grace', '-1', 'cmd'], '--grace', '--grace must be a number of seconds >= 0'],
    [['-np', '2', '--tag-output=yes', 'cmd'], '--tag-output', '--tag-output takes no value'],
    [['-np', '2', '-x', 'UNSET_VAR', 'cmd'], '-x', '-x UNSET_VAR: UNSET_VAR is not set'],
    [['-np', '2', '-x', '1BAD=v', 'cmd'], '-x', "-x expects VAR or VAR=value, got '1BAD=v'"],
    [['-np', '2', '-x', '=v', 'cmd'], '-x', '-x expects VAR or VAR=value'],
    [['-np', '2', '-x', 'RANK=3', 'cmd'], '-x', '-x RANK: RANK is set by ringrun'],
    [['-np', '2', '-x', 'RINGRUN_TOKEN=t', 'cmd'], '-x', 'RINGRUN_TOKEN is set by ringrun'],
  ])('rejects %j with a UsageError naming the option', (argv, option, message) => {
    const e = parseError(argv);
    expect(e.code).toBe('RINGRUN_ERR_USAGE');
    expect(e.option).toBe(option);
    expect(e.message).toContain(message);
    if (option) expect(e.message).toContain(option);
    expect(e.message).not.toContain('\n');
  });

  it('documents every option, the rank environment, the exit codes and an example in --help', () => {
    const help = helpText();
    const mentions = [
      '-np N', '-n N', '--np N', '--tag-output', '--no-tag-output', '--timeout SEC', '--start-timeout SEC',
      '--grace SEC', '-x VAR=value', '-x VAR', '--help', '-h', '--version', '-V', '--',
      'RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'RINGRUN_STORE', 'RINGRUN_TOKEN',
      'RINGRUN_START_TIMEOUT', 'RINGRUN ', 'Exit status', '124', '126', '127', '129', '130', '143', 'Example',
    ];
    for (const m of mentions) expect(help, m).toContain(m);
  });
});

describe('parseArgs: multiple hosts', () => {
  const files: Record<string, string> = {
    'ompi.txt': '# Open MPI style\nnode1 slots=4\n\nnode2 slots=2 max_slots=8   # trailing comment\n',
    'colon.txt': 'node1:3\n  node2:1  \n# the end\n',
    'mixed.txt': 'node1\nnode2:2\nnode3 slots=3\n[fd00::5]:2\n',
    'dup.txt': 'a:1\nb:2\na slots=3\n',
    'empty.txt': '# nothing\n\n',
    'badslots.txt': 'node1 slots=4\nnode2 slots=zero\n',
    'badfield.txt': 'node1 cpus=4\n',
    'both.txt': 'node1:2 slots=2\n',
  };
  const readFile = (path: string) => {
    if (!(path in files)) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return files[path];
  };
  const hostsOk = (argv: string[]) => {
    const r = parseArgs(argv, {}, readFile);
    if (r.kind !== 'run') throw new Error(r.kind);
    return r.config;
  };
  const hostsError = (argv: string[]) => {
    try {
      parseArgs(argv, {}, readFile);
    } catch (e) {
      if (e instanceof UsageError) return e;
      throw e;
    }
    throw new Error(`no error for ${argv.join(' ')}`);
  };

  it('-H: hosts with and without slot counts; -np defaults to the total', () => {
    const c = hostsOk(['-H', 'node1:2,node2,10.0.0.3:3', 'node', 't.js']);
    expect(c.hosts).toEqual([
      { host: 'node1', slots: 2 },
      { host: 'node2', slots: 1 },
      { host: '10.0.0.3', slots: 3 },
    ]);
    expect(c.np).toBe(6);
    expect(hostsOk(['-np', '4', '--host=a:2,b:2', 'cmd']).np).toBe(4);
    expect(hostsOk(['-H', 'a:2', '-H', 'b:1', 'cmd']).hosts).toEqual([{ host: 'a', slots: 2 }, { host: 'b', slots: 1 }]);
    expect(hostsOk(['-H', '[fd00::1]:2,a', 'cmd']).hosts).toEqual([{ host: 'fd00::1', slots: 2 }, { host: 'a', slots: 1 }]);
    // -np may use fewer slots than given.
    expect(hostsOk(['-np', '1', '-H', 'a:2,b:2', 'cmd']).np).toBe(1);
  });

  it('--hostfile: "host slots=N", "host:N", bare hosts, comments and blank lines; repeated hosts add up', () => {
    expect(hostsOk(['--hostfile', 'ompi.txt', 'cmd'])).toMatchObject({ np: 6, hosts: [{ host: 'node1', slots: 4 }, { host: 'node2', slots: 2 }] });
    expect(hostsOk(['--hostfile=colon.txt', 'cmd'])).toMatchObject({ np: 4, hosts: [{ host: 'node1', slots: 3 }, { host: 'node2', slots: 1 }] });
    expect(hostsOk(['--hostfile', 'mixed.txt', 'cmd']).hosts).toEqual([
      { host: 'node1', slots: 1 },
      { host: 'node2', slots: 2 },
      { host: 'node3', slots: 3 },
      { host: 'fd00::5', slots: 2 },
    ]);
    expect(hostsOk(['--hostfile', 'dup.txt', 'cmd']).hosts).toEqual([{ host: 'a', slots: 4 }, { host: 'b', slots: 2 }]);
    expect(parseHostfile('x slots=2\r\ny:1\r\n')).toEqual([{ host: 'x', slots: 2 }, { host: 'y', slots: 1 }]);
  });

  it('ssh, interface, verbosity and TLS options', () => {
    const c = hostsOk([
      '-H', 'a,b', '--rsh', 'ssh -o StrictHostKeyChecking=no', '-p', '2222', '-i', '/k/id', '--preflight-timeout', '3',
      '--iface', 'eth1', '--verbose', '--tls-cert', '/t/c.pem', '--tls-key=/t/k.pem', '--tls-ca', '/t/ca.pem', 'cmd',
    ]);
    expect(c).toMatchObject({
      rsh: ['ssh', '-o', 'StrictHostKeyChecking=no'], sshPort: 2222, sshIdentity: '/k/id', preflightTimeoutSec: 3, iface: 'eth1', verbose: true,
      tls: { cert: '/t/c.pem', key: '/t/k.pem', ca: '/t/ca.pem' },
    });
    expect(hostsOk(['--ssh-port=22', '--ssh-identity', 'id', '-np', '1', 'cmd'])).toMatchObject({ sshPort: 22, sshIdentity: 'id' });
    // TLS paths are made absolute: they must name the same file on every host.
    expect(hostsOk(['-np', '1', '--tls-cert', 'c.pem', '--tls-key', 'k.pem', 'cmd']).tls).toEqual({ cert: join(process.cwd(), 'c.pem'), key: join(process.cwd(), 'k.pem') });
  });

  it.each<[string[], string, string]>([
    [['-H', '', 'cmd'], '-H', '-H expects host[:slots]'],
    [['-H', 'a:0', 'cmd'], '-H', "-H the slot count in 'a:0' must be a positive integer, got '0'"],
    [['-H', 'a:x', 'cmd'], '-H', "got 'x'"],
    [['-H', 'a,,b', 'cmd'], '-H', '-H has an empty entry'],
    [['--host', 'a b', 'cmd'], '--host', "'a b' is not a host name"],
    [['-H', 'a:2,b:1', '-np', '4', 'cmd'], '-np', '-np 4 is more than the 3 slots given by -H'],
    [['--hostfile', 'colon.txt', '-np', '5', 'cmd'], '-np', '-np 5 is more than the 4 slots given by --hostfile'],
    [['--hostfile', 'missing.txt', 'cmd'], '--hostfile', '--hostfile missing.txt: cannot read it: ENOENT'],
    [['--hostfile', 'empty.txt', 'cmd'], '--hostfile', '--hostfile empty.txt: names no hosts'],
    [['--hostfile', 'badslots.txt', 'cmd'], '--hostfile', "--hostfile badslots.txt: line 2: slots must be a positive integer, got 'zero'"],
    [['--hostfile', 'badfield.txt', 'cmd'], '--hostfile', "line 1: unknown field 'cpus=4' (expected slots=N)"],
    [['--hostfile', 'both.txt', 'cmd'], '--hostfile', 'mixes host:N and slots=N'],
    [['-H', 'a', '--hostfile', 'colon.txt', 'cmd'], '-H', '-H and --hostfile cannot be combined'],
    [['-H', 'a', '-p', '70000', 'cmd'], '-p', "-p must be a port number (1-65535), got '70000'"],
    [['-H', 'a', '--ssh-port', 'ssh', 'cmd'], '--ssh-port', '--ssh-port must be a port number'],
    [['-H', 'a', '--rsh', ' ', 'cmd'], '--rsh', '--rsh expects a command'],
    [['-H', 'a', '-i', '', 'cmd'], '-i', '-i expects a key file'],
    [['-H', 'a', '--iface', 'eth 0', 'cmd'], '--iface', "--iface expects a network interface name such as eth0, got 'eth 0'"],
    [['-H', 'a', '--preflight-timeout', '0', 'cmd'], '--preflight-timeout', '--preflight-timeout must be a positive number'],
    [['-H', 'a', '--tls-cert', 'c.pem', 'cmd'], '--tls-key', '--tls-key is needed too'],
    [['-H', 'a', '--tls-key', 'k.pem', 'cmd'], '--tls-cert', '--tls-cert is needed too'],
    [['-H', 'a', '--tls-ca', 'ca.pem', 'cmd'], '--tls-ca', '--tls-ca needs --tls-cert and --tls-key'],
    [['-H', 'a', '--verbose=1', 'cmd'], '--verbose', '--verbose takes no value'],
  ])('rejects %j with a UsageError naming the option', (argv, option, message) => {
    const e = hostsError(argv);
    expect(e.option).toBe(option);
    expect(e.message).toContain(message);
    expect(e.message).toContain(option);
    expect(e.message).not.toContain('\n');
  });

  it('places ranks host by host, with local ranks and sizes per host', () => {
    expect(placeRanks([{ host: 'a', slots: 2 }, { host: 'b', slots: 3 }], 4)).toEqual([
      { host: 'a', localRank: 0, localSize: 2 },
      { host: 'a', localRank: 1, localSize: 2 },
      { host: 'b', localRank: 0, localSize: 2 },
      { host: 'b', localRank: 1, localSize: 2 },
    ]);
    expect(placeRanks([{ host: 'a', slots: 2 }, { host: 'b', slots: 3 }], 1)).toEqual([{ host: 'a', localRank: 0, localSize: 1 }]);
  });

  it("recognises this host's names and addresses (run without ssh)", () => {
    const mine = new Set(['10.1.2.3']);
    for (const h of ['localhost', '127.0.0.1', '127.0.1.1', '::1', '10.1.2.3', hostname(), hostname().toUpperCase()]) expect(isThisHost(h, mine), h).toBe(true);
    for (const h of ['10.1.2.4', 'node-elsewhere']) expect(isThisHost(h, mine), h).toBe(false);
  });

  it('quotes the remote command for a POSIX shell', () => {
    expect(shellQuote('/opt/rr/dist/launcher/remote.js')).toBe('/opt/rr/dist/launcher/remote.js');
    expect(shellQuote("/home/o'neil/my dir")).toBe(`'/home/o'\\''neil/my dir'`);
    expect(shellQuote('$(rm -rf /)')).toBe(`'$(rm -rf /)'`);
  });

  it('documents every multi-host option with examples in --help', () => {
    const help = helpText();
    for (const m of ['-H LIST', '--host LIST', '--hostfile FILE', 'slots=4', '--rsh CMD', '-p N', '--ssh-port N', '-i FILE', '--ssh-identity FILE',
      '--preflight-timeout SEC', '--iface NAME', '--verbose', '--tls-cert FILE', '--tls-key FILE', '--tls-ca FILE', 'preflight check',
      'ringrun -H node1:4,node2:4', 'ringrun --hostfile hosts.txt']) {
      expect(help, m).toContain(m);
    }
  });
});

describe('rankEnv', () => {
  const job = { worldSize: 4, store: { host: '127.0.0.1', port: 4242 }, token: 'ab'.repeat(32), exports: new Map([['FOO', 'bar']]) };

  it('gives each rank torchrun-style variables, the store and the token on top of the parent env', () => {
    expect(rankEnv({ PATH: '/bin', FOO: 'old' }, { ...job, startTimeoutSec: 30 }, 2)).toEqual({
      PATH: '/bin',
      FOO: 'bar',
      RANK: '2',
      WORLD_SIZE: '4',
      LOCAL_RANK: '2',
      LOCAL_WORLD_SIZE: '4',
      RINGRUN: '1',
      RINGRUN_STORE: '127.0.0.1:4242',
      RINGRUN_TOKEN: 'ab'.repeat(32),
      RINGRUN_START_TIMEOUT: '30',
    });
  });

  it('gives a rank on a host of several its local rank and size there', () => {
    const env = rankEnv({}, job, 3, { localRank: 1, localSize: 2 });
    expect(env).toMatchObject({ RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', FOO: 'bar' });
    // A remote rank's environment holds the job's variables only, not this host's.
    expect(Object.keys(env).sort()).toEqual(['FOO', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'RANK', 'RINGRUN', 'RINGRUN_STORE', 'RINGRUN_TOKEN', 'WORLD_SIZE']);
  });

  it("drops an outer job's settings that this job does not set", () => {
    const env = rankEnv({ RINGRUN_START_TIMEOUT: '9', RINGRUN_TOKEN: 'outer', RANK: '7' }, job, 0);
    expect(env.RINGRUN_START_TIMEOUT).toBeUndefined();
    expect(env.RINGRUN_TOKEN).toBe(job.token);
    expect(env.RANK).toBe('0');
  });
});

describe('LineSplitter', () => {
  const text = (lines: { bytes: Buffer; complete: boolean }[]) => lines.map((l) => `${l.bytes.toString()}${l.complete ? '$' : '…'}`);

  it('joins lines across chunks and returns the unterminated rest at the end', () => {
    const s = new LineSplitter();
    expect(text(s.push(Buffer.from('a\nb')))).toEqual(['a$']);
    expect(text(s.push(Buffer.from('c')))).toEqual([]);
    expect(text(s.push(Buffer.from('\n\nd\r\ne')))).toEqual(['bc$', '$', 'd\r$']);
    expect(text(s.end())).toEqual(['e…']);
    expect(s.end()).toEqual([]);
  });

  it('reassembles a UTF-8 character split across chunks', () => {
    const s = new LineSplitter();
    const bytes = Buffer.from('héllo\n');
    expect(s.push(bytes.subarray(0, 2))).toEqual([]);
    expect(text(s.push(bytes.subarray(2)))).toEqual(['héllo$']);
  });

  it('passes an over-long line on in pieces', () => {
    const s = new LineSplitter(4);
    expect(text(s.push(Buffer.from('abcdefg')))).toEqual(['abcdefg…']);
    expect(text(s.push(Buffer.from('hi\n')))).toEqual(['hi$']);
  });
});

// ---------------------------------------------------------------------------------------------
// Real processes.

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
  stdout: string;
  stderr: string;
}

interface Running {
  child: ChildProcess;
  /** Output so far. */
  readonly stdout: string;
  readonly stderr: string;
  done: Promise<Finished>;
}

const children = new Set<ChildProcess>();
const pidFiles: string[] = [];
let scratch: string;

beforeAll(() => {
  if (!existsSync(join(root, 'dist', 'launcher', 'cli.js'))) {
    throw new Error('dist/launcher/cli.js is missing: run `npx tsc -p tsconfig.build.json` before these tests');
  }
  scratch = mkdtempSync(join(tmpdir(), 'ringrun-test-'));
});

afterEach(() => {
  // Whatever a failed test left behind: ringrun itself, then every recorded rank and grandchild.
  for (const c of children) c.kill('SIGKILL');
  children.clear();
  for (const f of pidFiles.splice(0)) for (const pid of readPids(f)) if (alive(pid)) process.kill(pid, 'SIGKILL');
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function start(args: string[], env: NodeJS.ProcessEnv = process.env): Running {
  const t0 = Date.now();
  const child = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out.stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out.stderr += d));
  const done = new Promise<Finished>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ringrun ${args.join(' ')} still running after ${RUN_DEADLINE_MS} ms; stderr:\n${out.stderr}`));
    }, RUN_DEADLINE_MS);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, ms: Date.now() - t0, ...out });
    });
  });
  return {
    child,
    get stdout() {
      return out.stdout;
    },
    get stderr() {
      return out.stderr;
    },
    done,
  };
}

const ringrun = (args: string[], env?: NodeJS.ProcessEnv) => start(args, env).done;

/** A fresh file for the sleeper fixture's pids, cleaned up after the test. */
function pidFile(): string {
  const f = join(scratch, `pids-${pidFiles.length}-${Date.now()}`);
  pidFiles.push(f);
  return f;
}

function readPids(file: string): number[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
}

async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every pid the fixture recorded is gone (allowing a moment for the kernel to finish). */
async function expectAllGone(file: string, expectedCount: number): Promise<void> {
  const pids = readPids(file);
  expect(pids).toHaveLength(expectedCount);
  const deadline = Date.now() + GONE_WITHIN_MS;
  let left = pids.filter(alive);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = left.filter(alive);
  }
  expect(left, 'processes still alive').toEqual([]);
}

const lines = (s: string) => s.split('\n').filter(Boolean);

describe('ringrun command line', () => {
  it('--help exits 0 and documents every option', async () => {
    const r = await ringrun(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(helpText());
    expect(r.stderr).toBe('');
    // The subcommands are listed, with where their own help is.
    expect(r.stdout).toMatch(/ringrun bench -np N \[options\] +\(see ringrun bench --help\)/);
    expect(r.stdout).toMatch(/\nSubcommands:\n  bench +time one collective/);
  });

  it('--version prints the package version and the kernel backend', async () => {
    for (const flag of ['--version', '-V']) {
      const r = await ringrun([flag]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^ringrun ${pkgVersion.replace(/\./g, '\\.')} \\(kernels: (js|native)\\)\\n$`));
    }
  });

  it('a bad option exits 2 with one line on stderr', async () => {
    for (const args of [['-np', 'x', 'node'], ['-np', '2', '--frobnicate', 'node'], ['--timeout=-3', '-np', '2', 'node']]) {
      const r = await ringrun(args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toMatch(/^ringrun: .+ \(see ringrun --help\)\n$/);
    }
    expect((await ringrun(['-np', 'x', 'node'])).stderr).toBe("ringrun: -np must be a positive integer, got 'x' (see ringrun --help)\n");
  });

  it('-x of an unset variable exits 2 naming it', async () => {
    const env = { ...process.env };
    delete env.RR_TEST_UNSET;
    const r = await ringrun(['-np', '2', '-x', 'RR_TEST_UNSET', 'node', fixture('env')], env);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(['ringrun: -x RR_TEST_UNSET: RR_TEST_UNSET is not set (see ringrun --help)']);
  });
});

describe('ringrun jobs', () => {
  it.each([2, 4])('starts %i ranks with their environment and tags their output', async (n) => {
    const r = await ringrun(['-np', String(n), 'node', fixture('env')]);
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout);
    // ringrun's own line on a host with fewer CPUs than ranks aside, stderr is the ranks'.
    const err = lines(r.stderr).filter((l) => !l.startsWith('ringrun: warning:') || !l.includes('ranks share cores'));
    for (let rank = 0; rank < n; rank++) {
      expect(out).toContain(
        `[1,${rank}]<stdout>:rank=${rank} size=${n} local_rank=${rank} local_size=${n} store=ok token=ok ringrun=1 argv_clean=true`,
      );
      expect(out).toContain(`[1,${rank}]<stdout>:unterminated ${rank}`);
      expect(err).toContain(`[1,${rank}]<stderr>:hello from rank ${rank}`);
    }
    // Every line is tagged, and stdout and stderr stay apart.
    expect(out).toHaveLength(3 * n);
    for (const l of out) expect(l).toMatch(/^\[1,\d+\]<stdout>:/);
    expect(err).toHaveLength(n);
    for (const l of err) expect(l).toMatch(/^\[1,\d+\]<stderr>:/);
  });

  it('passes -x values and --start-timeout to every rank', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, RR_TEST_COPIED: 'yes' };
    delete env.FOO;
    const r = await ringrun(['-np', '2', '-x', 'FOO=bar', '-x', 'RR_TEST_COPIED', '--start-timeout=7', 'node', fixture('env')], env);
    expect(r.code, r.stderr).toBe(0);
    for (const rank of [0, 1]) expect(lines(r.stdout)).toContain(`[1,${rank}]<stdout>:foo=bar copied=yes start_timeout=7`);
  });

  it('--no-tag-output forwards lines unchanged', async () => {
    const r = await ringrun(['-np', '2', '--no-tag-output', 'node', fixture('env')]);
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r.stdout)).toContain('rank=1 size=2 local_rank=1 local_size=2 store=ok token=ok ringrun=1 argv_clean=true');
    expect(lines(r.stdout)).toContain('unterminated 0');
    expect(lines(r.stderr).sort()).toEqual(['hello from rank 0', 'hello from rank 1']);
    expect(r.stdout).not.toContain('<stdout>');
  });

  it('a rank that exits with code 3 ends the job with code 3, and nothing is left running', async () => {
    const pids = pidFile();
    const r = await ringrun(['-np', '3', 'node', fixture('sleeper'), pids, '--fail-rank', '1', '--code', '3']);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/^ringrun: rank 1 \(pid \d+\) exited with code 3$/m);
    expect(r.stderr).toMatch(/^ringrun: last 2 stderr lines of rank 1:\n {4}rank 1: pid \d+, grandchild \d+\n {4}rank 1: failing on purpose with code 3\n/m);
    expect(r.stderr).toContain('ringrun: stopping the other 2 ranks\n');
    // The rank's own stderr still came through, tagged.
    expect(r.stderr).toContain('[1,1]<stderr>:rank 1: failing on purpose with code 3\n');
    await expectAllGone(pids, 6);
  });

  it('a rank killed by a signal ends the job with 128 + the signal number', async () => {
    const pids = pidFile();
    const r = await ringrun(['-np', '2', 'node', fixture('sleeper'), pids, '--kill-rank', '1']);
    expect(r.code, r.stderr).toBe(137);
    expect(r.stderr).toMatch(/^ringrun: rank 1 \(pid \d+\) was killed by signal SIGKILL$/m);
    await expectAllGone(pids, 4);
  });

  it('SIGTERM to ringrun stops the ranks (SIGKILL after --grace if they ignore it) and exits 143', async () => {
    const pids = pidFile();
    const job = start(['-np', '2', '--grace', '0.5', 'node', fixture('sleeper'), pids, '--ignore-term']);
    await waitFor('both ranks and grandchildren to start', () => readPids(pids).length === 4);
    job.child.kill('SIGTERM');
    const r = await job.done;
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toContain('ringrun: received SIGTERM; stopping 2 ranks\n');
    expect(r.stderr).toContain('ringrun: 2 ranks still running 0.5 s after SIGTERM; sending SIGKILL\n');
    await expectAllGone(pids, 4);
  });

  it('a second SIGINT kills the ranks at once and ringrun exits 130', async () => {
    const pids = pidFile();
    const job = start(['-np', '2', 'node', fixture('sleeper'), pids, '--ignore-term']); // default grace: 5 s
    await waitFor('both ranks and grandchildren to start', () => readPids(pids).length === 4);
    const t0 = Date.now();
    job.child.kill('SIGINT');
    await waitFor('ringrun to acknowledge SIGINT', () => job.stderr.includes('received SIGINT;'));
    job.child.kill('SIGINT');
    const r = await job.done;
    expect(r.code, r.stderr).toBe(130);
    expect(Date.now() - t0).toBeLessThan(DEFAULT_GRACE_SEC * 1000);
    expect(r.stderr).toContain('ringrun: received SIGINT while stopping; sending SIGKILL to every rank\n');
    await expectAllGone(pids, 4);
  });

  it('--timeout stops a job that runs too long and exits 124', async () => {
    const pids = pidFile();
    const job = start(['-np', '2', '--timeout', '1', 'node', fixture('sleeper'), pids]);
    await waitFor('both ranks and grandchildren to start', () => readPids(pids).length === 4);
    const r = await job.done;
    expect(r.code, r.stderr).toBe(124);
    expect(r.ms).toBeLessThan(6_000);
    expect(r.stderr).toContain('ringrun: job timed out after 1 s; stopping 2 ranks\n');
    await expectAllGone(pids, 4);
  });

  it('stops processes that successful ranks leave behind', async () => {
    const pids = pidFile();
    const r = await ringrun(['-np', '2', 'node', fixture('sleeper'), pids, '--exit-zero']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/exited but left processes behind; stopping them/);
    await expectAllGone(pids, 4);
  });

  it('kills every rank group when an exception escapes inside the launcher', async () => {
    const pids = pidFile();
    const child = spawn(process.execPath, [fixture('crash'), pids, fixture('sleeper')], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(child);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    children.delete(child);
    expect(code, stderr).toBe(1);
    expect(stderr).toContain('simulated bug in ringrun');
    await expectAllGone(pids, 4);
  });

  it('a command that does not exist exits 127 naming it', async () => {
    const r = await ringrun(['-np', '2', 'rr-no-such-command-xyz', '--flag']);
    expect(r.code).toBe(127);
    expect(lines(r.stderr)).toEqual(["ringrun: cannot start 'rr-no-such-command-xyz': not found"]);
  });

  it('a command that cannot be executed exits 126; a script given without node gets the fix', async () => {
    const r = await ringrun(['-np', '1', fixture('env')]); // a script without the execute bit
    expect(r.code).toBe(126);
    expect(lines(r.stderr)).toEqual([`ringrun: cannot start '${fixture('env')}': permission denied: did you mean 'ringrun -np N node ${fixture('env')}'?`]);
  });

  it('-H with only this host\'s names runs every rank here, without ssh, counted as one host', async () => {
    // --rsh points nowhere: using it would fail the job.
    const r = await ringrun(['-H', `localhost:1,127.0.0.1:1,${hostname()}:1`, '--rsh', 'rr-no-such-rsh', 'node', fixture('env')]);
    expect(r.code, r.stderr).toBe(0);
    for (const rank of [0, 1, 2]) {
      expect(lines(r.stdout)).toContain(
        `[1,${rank}]<stdout>:rank=${rank} size=3 local_rank=${rank} local_size=3 store=ok token=ok ringrun=1 argv_clean=true`,
      );
    }
  });

  it('launch() runs a job programmatically and resolves to its exit code', async () => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const config: LaunchConfig = { ...parseOk(['-np', '2', 'node', fixture('env')]), graceSec: 1 };
    const code = await launch(config, { stdout, stderr, env: { ...process.env, FOO: 'from-launch' } });
    expect(code, err).toBe(0);
    expect(lines(out)).toContain('[1,0]<stdout>:rank=0 size=2 local_rank=0 local_size=2 store=ok token=ok ringrun=1 argv_clean=true');
    expect(lines(out)).toContain('[1,1]<stdout>:foo=from-launch copied=- start_timeout=-');
    expect(lines(err)).toContain('[1,1]<stderr>:hello from rank 1');
  });
});

describe('preflight: one actionable line per way a host can fail', () => {
  const check = (script: string, timeoutSec = 10) =>
    preflightHost({ host: 'node7', argv: ['sh', '-c', script], timeoutSec, root: '/opt/rr', cwd: '/work/job' });

  it.each<[string, string, boolean, RegExp]>([
    ['success', `echo 'ringrun-remote: ok node=v20.1.0 ringreduce=0.1.0 host=node7'`, true, /^node=v20\.1\.0 ringreduce=0\.1\.0 host=node7$/],
    ['ssh cannot connect', `echo 'ssh: connect to host node7 port 22: Connection refused' >&2; exit 255`, false,
      /^cannot connect with 'sh' \(it said: ssh: connect to host node7 port 22: Connection refused\); check that 'ssh node7 true' works without a password$/],
    ['no node', `echo 'sh: 1: node: not found' >&2; exit 127`, false, /^'node' is not on the PATH of a non-interactive shell there \(it said: sh: 1: node: not found\)/],
    ['no project', `echo "Error: Cannot find module '/opt/rr/dist/launcher/remote.js'" >&2; exit 1`, false,
      /^the project is not at \/opt\/rr there; install and build it at the same path on every host/],
    ['no working directory', `echo 'ringrun-remote: the working directory /work/job does not exist on node7' >&2; exit 3`, false,
      /^the working directory \/work\/job does not exist there/],
    ['old node', `echo 'ringrun-remote: node v18.0.0 on node7 is too old: ringreduce needs node >= 20' >&2; exit 4`, false, /^node is too old there \(it said: .*v18\.0\.0/],
    ['anything else', `echo 'surprise' >&2; exit 9`, false, /^the check failed with exit code 9 \(it said: surprise\)$/],
  ])('%s', async (_what, script, ok, message) => {
    const r = await check(script);
    expect(r.host).toBe('node7');
    expect(r.ok).toBe(ok);
    expect(r.message).toMatch(message);
  });

  it('a host that does not answer in time is killed and reported', async () => {
    const t0 = Date.now();
    const r = await check('sleep 30', 0.5);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(r).toMatchObject({ ok: false });
    expect(r.message).toMatch(/^no answer within 0\.5 s: is the host up and reachable with 'sh'\? \(--preflight-timeout to wait longer\)$/);
  });

  it('an rsh command that does not exist', async () => {
    const r = await preflightHost({ host: 'h', argv: ['rr-no-such-rsh'], timeoutSec: 5, root: '/r', cwd: '/c' });
    expect(r).toEqual({ host: 'h', ok: false, message: "cannot run 'rr-no-such-rsh' (ENOENT); set --rsh to a command that reaches other hosts" });
  });

  it('the real bootstrap answers the check (and names a missing working directory)', () => {
    const bootstrap = join(root, 'dist', 'launcher', 'remote.js');
    const ok = spawnSync(process.execPath, [bootstrap, '--preflight', root], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`^ringrun-remote: ok node=${process.version.replace(/\./g, '\\.')} ringreduce=${pkgVersion.replace(/\./g, '\\.')} host=`));
    const missing = spawnSync(process.execPath, [bootstrap, '--preflight', join(scratch, 'no-such-dir')], { encoding: 'utf8' });
    expect(missing.status).toBe(3);
    expect(missing.stderr).toContain(`the working directory ${join(scratch, 'no-such-dir')} does not exist on`);
  });
});

describe('the remote bootstrap (dist/launcher/remote.js), driven over stdin like ringrun does', () => {
  const bootstrap = () => join(root, 'dist', 'launcher', 'remote.js');
  const hello = (over: Record<string, unknown>) =>
    `${JSON.stringify({ v: 1, rank: 3, host: 'here', cwd: scratch, env: { RR_FROM_HELLO: 'yes' }, command: 'node', args: [], graceSec: 1, ...over })}\n`;

  function startBootstrap(): { child: ChildProcess; out: () => string; err: () => string; code: Promise<number | null> } {
    const child = spawn(process.execPath, [bootstrap()], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const code = new Promise<number | null>((resolve) => child.once('close', (c) => (children.delete(child), resolve(c))));
    return { child, out: () => out, err: () => err, code };
  }

  it('runs the command in the given directory with the given environment, and exits with its code', async () => {
    const b = startBootstrap();
    b.child.stdin!.write(hello({ args: ['-e', 'console.log(process.cwd(), process.env.RR_FROM_HELLO); process.exit(5)'] }));
    expect(await b.code).toBe(5);
    expect(b.out()).toBe(`${scratch} yes\n`);
  });

  it('a command that does not exist: exit 127 and a message naming it', async () => {
    const b = startBootstrap();
    b.child.stdin!.write(hello({ command: 'rr-no-such-command-xyz' }));
    expect(await b.code).toBe(127);
    expect(b.err()).toMatch(/^ringrun-remote: rank 3: cannot start 'rr-no-such-command-xyz' on .+: not found\n$/);
  });

  it('the end of its input (ringrun gone, ssh session closed) stops the rank and its group', async () => {
    const pids = pidFile();
    const b = startBootstrap();
    b.child.stdin!.write(hello({ args: [fixture('sleeper'), pids], env: { RANK: '0' } }));
    await waitFor('the rank and its grandchild to start', () => readPids(pids).length === 2);
    b.child.stdin!.end();
    // The rank dies of the SIGTERM it was sent: 128 + 15, as ringrun reports it.
    expect(await b.code).toBe(143);
    await expectAllGone(pids, 2);
  });

  it("'SIGKILL' on its input kills the rank's group; the bootstrap reports 137 without calling it news", async () => {
    const pids = pidFile();
    const b = startBootstrap();
    b.child.stdin!.write(hello({ args: [fixture('sleeper'), pids, '--ignore-term'], env: { RANK: '0' } }));
    await waitFor('the rank and its grandchild to start', () => readPids(pids).length === 2);
    await new Promise((r) => setTimeout(r, 500)); // the grandchild installs its SIGTERM handler once node has booted
    b.child.stdin!.write('SIGTERM\n'); // ignored by this rank and its grandchild
    await new Promise((r) => setTimeout(r, 200));
    expect(readPids(pids).filter(alive)).toHaveLength(2);
    b.child.stdin!.write('SIGKILL\n');
    expect(await b.code).toBe(137);
    expect(b.err()).not.toContain('was killed by signal');
    await expectAllGone(pids, 2);
  });
});
