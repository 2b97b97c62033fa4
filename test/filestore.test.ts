import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FileStore, releaseSharedToken, sharedToken } from '../src/rendezvous/file-store.js';
import { root, runToEnd } from './helpers/run.js';

/**
 * The shared-directory store (RINGREDUCE_STORE=file:///dir): its write-once and waiting semantics
 * in one process, then real jobs with no address known up front: plain processes, and Open MPI's
 * mpirun (skipped without it).
 */

let scratch: string;
const children = new Set<ChildProcess>();
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'rr-filestore-'));
});
afterEach(() => {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let n = 0;
const freshDir = () => join(scratch, `store-${n++}`);

describe('FileStore', () => {
  it('creates the directory, writes each key once, and reads values back', async () => {
    const dir = freshDir();
    const a = await FileStore.open(dir);
    const b = await FileStore.open(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    await a.set('ring/0', { host: '10.0.0.1', port: 5 });
    await b.set('ring/1', { host: '10.0.0.2', port: 6 });
    expect(await b.get(['ring/0', 'ring/1'], 1000)).toEqual([{ host: '10.0.0.1', port: 5 }, { host: '10.0.0.2', port: 6 }]);
    // One file per key, private, no temporary files left behind.
    expect(readdirSync(dir).sort()).toEqual(['ring%2F0', 'ring%2F1']);
    expect(statSync(join(dir, 'ring%2F0')).mode & 0o777).toBe(0o600);
    // Setting the same value again is harmless; another value is refused, naming the writer.
    await a.set('ring/0', { host: '10.0.0.1', port: 5 });
    await expect(b.set('ring/0', { host: '10.9.9.9', port: 1 })).rejects.toThrow(
      new RegExp(`file store ${dir}: 'ring/0' is already set \\(file .*ring%2F0, written by pid ${process.pid} on .+\\); a stale file from an earlier job\\?`),
    );
  });

  it('get() waits for keys written later, and times out naming the missing ones', async () => {
    const dir = freshDir();
    const s = await FileStore.open(dir);
    const later = setTimeout(() => void s.set('k/1', 'one'), 150);
    const t0 = Date.now();
    expect(await s.get(['k/1'], 5000)).toEqual(['one']);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
    clearTimeout(later);
    const err = await s.get(['k/1', 'k/2', 'k/3'], 200).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'RING_ERR_TIMEOUT', missing: ['k/2', 'k/3'] });
  });

  it('concurrent writers of one key: exactly one wins, everyone reads the winner', async () => {
    const dir = freshDir();
    const stores = await Promise.all(Array.from({ length: 8 }, () => FileStore.open(dir)));
    const results = await Promise.all(stores.map((s, i) => s.putIfAbsent('race', i)));
    expect(results.filter((r) => r.mine)).toHaveLength(1);
    const winner = results.find((r) => r.mine)!.entry.value;
    for (const r of results) expect(r.entry.value).toBe(winner);
  });

  it('a half-written value (no-hard-link filesystems write in place) reads as not there yet', async () => {
    const dir = freshDir();
    const s = await FileStore.open(dir);
    writeFileSync(join(dir, 'k'), '{"value": "par');
    const pending = s.get(['k'], 3000);
    setTimeout(() => writeFileSync(join(dir, 'k'), JSON.stringify({ value: 'whole', pid: 1, host: 'h', at: 'now' })), 100);
    expect(await pending).toEqual(['whole']);
  });

  it('release() deletes entries; the shared token is one value for all, mode 0600, until released', async () => {
    const dir = freshDir();
    const s = await FileStore.open(dir);
    await s.set('ring/0', 1);
    await s.release(['ring/0']);
    expect(readdirSync(dir)).toEqual([]);
    const tokens = await Promise.all(Array.from({ length: 4 }, () => sharedToken(dir)));
    expect(new Set(tokens).size).toBe(1);
    expect(tokens[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(join(dir, 'token')).mode & 0o777).toBe(0o600);
    await releaseSharedToken(dir);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a directory that cannot be created is a rendezvous error naming it', async () => {
    const file = join(scratch, 'a-file');
    writeFileSync(file, '');
    await expect(FileStore.open(join(file, 'sub'))).rejects.toThrow(/file store .*a-file\/sub: cannot use the directory/);
  });
});

const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv, deadlineMs = 60_000) =>
  runToEnd(cmd, args, { env, cwd: root, deadlineMs, started: children });

/** The line examples/allreduce.js prints for rank k of 3 when every result is exact. */
function expectExactRank(stdout: string, k: number): void {
  const line = stdout.split('\n').find((l) => l.includes(`rank ${k}/3: allreduce of 100003 floats`));
  expect(line, stdout).toBeDefined();
  expect(line).toContain(', 0 wrong; sum[0..2]=3,6,9; allgather=[0,1,2]; broadcast=3.14159; ');
  expect(line).toContain(`reducescatter=[${6 * k},${6 * k + 3}]`);
}

/** The environment of a process started by "someone else": nothing of ringrun's, no token. */
function plainEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, COUNT: '100003', ...extra };
  for (const k of ['RINGRUN_STORE', 'RINGRUN_TOKEN', 'RINGREDUCE_TOKEN', 'MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE']) delete env[k];
  return { ...env, ...extra };
}

describe('jobs through a file:// store', () => {
  it('three plain processes (RANK/WORLD_SIZE only): exact results, a shared token, an empty directory afterwards', async () => {
    const dir = freshDir();
    const runs = [0, 1, 2].map((r) =>
      run(process.execPath, ['examples/allreduce.js'], plainEnv({ RANK: String(r), WORLD_SIZE: '3', RINGREDUCE_STORE: `file://${dir}` })),
    );
    const done = await Promise.all(runs);
    done.forEach((d, k) => {
      expect(d.code, d.stderr).toBe(0);
      expectExactRank(d.stdout, k);
      // The token came from the directory, so there is no "links are not protected" warning.
      expect(d.stderr).not.toContain('not protected by a secret');
    });
    expect(readdirSync(dir)).toEqual([]);
  });

  it('all ranks on this host by the launcher\'s word (LOCAL_WORLD_SIZE = WORLD_SIZE): their links listen on loopback, not on the network', async () => {
    const dir = freshDir();
    const env = (r: number, local: string) =>
      plainEnv({ RANK: String(r), WORLD_SIZE: '2', LOCAL_RANK: String(r), LOCAL_WORLD_SIZE: local, RINGREDUCE_STORE: `file://${dir}`, RINGREDUCE_VERBOSE: '1', COUNT: '1000' });
    const done = await Promise.all([0, 1].map((r) => run(process.execPath, ['examples/allreduce.js'], env(r, '2'))));
    done.forEach((d, k) => {
      expect(d.code, d.stderr).toBe(0);
      expect(d.stderr).toMatch(new RegExp(`rank ${k}: ring links listen on ws://127\\.0\\.0\\.1:\\d+ \\(loopback: the launcher says every rank runs on this host`));
    });
    // Without that word (one rank per host, as far as the launcher knows): not loopback.
    const apart = await Promise.all([0, 1].map((r) => run(process.execPath, ['examples/allreduce.js'], { ...env(r, '1'), LOCAL_RANK: '0' })));
    apart.forEach((d, k) => {
      expect(d.code, d.stderr).toBe(0);
      expect(d.stderr).toMatch(new RegExp(`rank ${k}: ring links listen on ws://\\S+ \\((?!loopback: the launcher)`));
    });
  });

  it('a stale entry from an earlier job stops the start with an error naming the file', async () => {
    const dir = freshDir();
    const old = await FileStore.open(dir);
    await old.set('ring/1', { host: '10.255.0.1', port: 1, size: 2, chunkBytes: 1 << 20, pid: 1, hostname: 'gone', machine: 'gone', tls: false });
    const env = (r: number) => plainEnv({ RANK: String(r), WORLD_SIZE: '2', RINGREDUCE_STORE: `file://${dir}`, RINGREDUCE_START_TIMEOUT: '5' });
    const [r0, r1] = await Promise.all([run(process.execPath, ['examples/allreduce.js'], env(0)), run(process.execPath, ['examples/allreduce.js'], env(1))]);
    expect(r1.code).not.toBe(0);
    expect(r1.stderr).toMatch(/'ring\/1' is already set \(file .*ring%2F1, written by pid \d+ on .+\); a stale file from an earlier job\? Delete the store's files or use a fresh directory/);
    // Rank 0 read the stale address and cannot reach it: it fails within its start timeout.
    expect(r0.code).not.toBe(0);
  });

  const haveMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!haveMpirun)('mpirun -np 3 -x RINGREDUCE_STORE=file:///dir node examples/allreduce.js: exact results (skipped without openmpi-bin)', async () => {
    const dir = freshDir();
    const args = ['--allow-run-as-root', '--oversubscribe', '-np', '3', '-x', `RINGREDUCE_STORE=file://${dir}`, '-x', 'COUNT=100003', process.execPath, 'examples/allreduce.js'];
    const r = await run('mpirun', args, plainEnv({}));
    if (process.env.RR_SHOW_OUTPUT) console.log(`mpirun ${args.join(' ')}\nexit ${r.code}\n${r.stdout}${r.stderr}`);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    for (const k of [0, 1, 2]) expectExactRank(r.stdout, k);
    expect(readdirSync(dir)).toEqual([]);
  });
});
