import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_GRACE_SEC, helpText, parseArgs, UsageError, type LaunchConfig } from '../src/launcher/args.js';
import { rankEnv } from '../src/launcher/env.js';
import { launch } from '../src/launcher/job.js';
import { LineSplitter } from '../src/launcher/output.js';

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

/** Running, as opposed to gone or a zombie waiting for init to reap it (a zombie is dead). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return !existsSync('/proc/self/stat'); // no /proc (not Linux): trust kill(0); else it just went
  }
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
    const err = lines(r.stderr);
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

  it('a command that cannot be executed exits 126', async () => {
    const r = await ringrun(['-np', '1', fixture('env')]); // a script without the execute bit
    expect(r.code).toBe(126);
    expect(lines(r.stderr)).toEqual([`ringrun: cannot start '${fixture('env')}': permission denied`]);
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
