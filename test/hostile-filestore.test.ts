import { spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RingError } from '../src/index.js';
import { FileStore, sharedToken } from '../src/rendezvous/file-store.js';
import { root } from './helpers/run.js';

/**
 * Another local user who gets to a file:// store first (issue 14, row 4). Before, a job silently
 * used a token that user had planted in the directory (and so the user could join or impersonate
 * ranks). Now a directory or entry that is not this user's alone is refused with
 * RING_ERR_RENDEZVOUS naming its owner and mode. The other user is uid 65534 (nobody): cases that
 * need another uid run as root only; the mode cases run everywhere.
 */
const NOBODY = 65534;
const isRoot = process.geteuid?.() === 0;
/** Generous for a loaded 2-core machine: a refusal is immediate, a job that forms a ring takes ~1 s. */
const JOB_DEADLINE_MS = 60_000;

let scratch: string;
let n = 0;
const fresh = () => join(scratch, `store-${n++}`);
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'rr-hostile-fs-'));
  // Like /tmp: anyone may create a directory here, nobody may remove another's.
  chmodSync(scratch, 0o1777);
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const entry = (value: unknown) => JSON.stringify({ value, pid: 1, host: 'elsewhere', at: new Date().toISOString() });

async function refusal(p: Promise<unknown>): Promise<RingError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, 'accepted what another user could have planted').toBeInstanceOf(RingError);
  expect((e as RingError).code, (e as Error).message).toBe('RING_ERR_RENDEZVOUS');
  return e as RingError;
}

describe('a file:// store directory or entry that is not this user\'s alone is refused, naming owner and mode', () => {
  it.each(['0777', '0775', '0770', '01777', '0757'])('a directory of mode %s (writable by group or others)', async (octal) => {
    const mode = Number.parseInt(octal, 8);
    const dir = fresh();
    mkdirSync(dir);
    chmodSync(dir, mode);
    const e = await refusal(FileStore.open(dir));
    expect(e.message).toContain(`file store ${dir}: refusing a directory that is writable by`);
    expect(e.message).toContain(`mode 0${mode.toString(8)}`);
    expect(e.message).toMatch(/owned by uid \d+/);
    // The same through sharedToken (what init() calls first): nothing is written there.
    await refusal(sharedToken(dir));
    expect(() => readFileSync(join(dir, 'token'))).toThrow(/ENOENT/);
  });

  it('a directory of mode 0755 or 0700, ours, is fine (0755: others may read the entries, not write them)', async () => {
    for (const mode of [0o755, 0o700]) {
      const dir = fresh();
      mkdirSync(dir);
      chmodSync(dir, mode);
      await FileStore.open(dir);
      expect(await sharedToken(dir)).toMatch(/^[0-9a-f]{64}$/);
    }
  });

  it('a token that is a symbolic link, readable by others, or writable by group', async () => {
    const target = join(scratch, 'someone-elses-token');
    writeFileSync(target, entry('planted'), { mode: 0o600 });
    const cases: Array<[string, (path: string) => void, RegExp]> = [
      ['symlink', (p) => symlinkSync(target, p), /it is a symbolic link/],
      ['mode 0644', (p) => writeFileSync(p, entry('planted'), { mode: 0o644 }), /it is readable by group and others \(mode 0644, owned by uid \d+/],
      ['mode 0620', (p) => writeFileSync(p, entry('planted'), { mode: 0o620 }), /it is writable by group \(mode 0620/],
    ];
    for (const [what, plant, message] of cases) {
      const dir = fresh();
      mkdirSync(dir, { mode: 0o700 });
      const path = join(dir, 'token');
      plant(path);
      chmodSync(dir, 0o700);
      if (what !== 'symlink') chmodSync(path, Number.parseInt(what.slice(5), 8));
      const e = await refusal(sharedToken(dir));
      expect(e.message, what).toMatch(message);
      expect(e.message).toContain(`refusing ${path}`);
    }
  });

  it.skipIf(!isRoot)('(as root) a directory, a token, or a rank record owned by another user', async () => {
    const dir = fresh();
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, NOBODY, NOBODY);
    const e = await refusal(FileStore.open(dir));
    expect(e.message).toMatch(new RegExp(`refusing a directory that is owned by uid ${NOBODY}( \\(\\w+\\))? with mode 0700, not by this user, uid 0`));

    const mine = fresh();
    mkdirSync(mine, { mode: 0o700 });
    writeFileSync(join(mine, 'token'), entry('planted'), { mode: 0o600 });
    chownSync(join(mine, 'token'), NOBODY, NOBODY);
    const t = await refusal(sharedToken(mine));
    expect(t.message).toMatch(new RegExp(`refusing ${join(mine, 'token')}: it is owned by uid ${NOBODY}`));

    const other = fresh();
    mkdirSync(other, { mode: 0o700 });
    writeFileSync(join(other, 'ring%2F1'), entry({ host: '127.0.0.1', port: 1 }), { mode: 0o600 });
    chownSync(join(other, 'ring%2F1'), NOBODY, NOBODY);
    const store = await FileStore.open(other);
    const r = await refusal(store.get(['ring/1'], 1000));
    expect(r.message).toMatch(/ring%2F1: it is owned by uid 65534/);
  });
});

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function node(args: string[], env: NodeJS.ProcessEnv, as?: number): Promise<Exit> {
  const t0 = performance.now();
  const p = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], ...(as !== undefined && { uid: as, gid: as }) });
  let stdout = '';
  let stderr = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`node ${args.join(' ')} did not finish within ${JOB_DEADLINE_MS} ms\n${stdout}\n${stderr}`));
    }, JOB_DEADLINE_MS);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

/** A rank of a plain 2-process job: prints its init's outcome as one JSON line. */
const RANK = `
import * as rr from ${JSON.stringify(join(root, 'dist', 'index.js'))};
try {
  await rr.init();
  const s = await rr.allreduce(Float32Array.of(rr.rank() + 1));
  console.log(JSON.stringify({ formed: true, sum: s[0] }));
  await rr.shutdown();
} catch (e) {
  console.log(JSON.stringify({ code: e.code, message: e.message }));
  process.exitCode = 3;
}`;

describe.skipIf(!isRoot)('(as root) another local user creates the store directory and its token first', () => {
  it('a 2-rank job refuses the planted directory on both ranks, naming owner and mode, and uses nothing from it', async () => {
    const dir = join(scratch, 'shared-store');
    const planted = 'f'.repeat(64);
    // The other user, in a process of its own: the directory (its default mode) and a token.
    const plant = await node(
      ['-e', `const fs = require('fs'); fs.mkdirSync(${JSON.stringify(dir)}); fs.writeFileSync(${JSON.stringify(join(dir, 'token'))}, ${JSON.stringify(entry(planted))}, { mode: 0o600 });`],
      { PATH: process.env.PATH },
      NOBODY,
    );
    expect(plant.code, plant.stderr).toBe(0);
    const env = (r: number): NodeJS.ProcessEnv => {
      const e: NodeJS.ProcessEnv = { ...process.env, RANK: String(r), WORLD_SIZE: '2', RINGREDUCE_STORE: `file://${dir}`, RINGREDUCE_START_TIMEOUT: '20' };
      for (const k of ['RINGRUN_STORE', 'RINGRUN_TOKEN', 'RINGREDUCE_TOKEN', 'MASTER_ADDR', 'MASTER_PORT']) delete e[k];
      return e;
    };
    const script = join(scratch, 'rank.mjs');
    writeFileSync(script, RANK);
    const ranks = await Promise.all([0, 1].map((r) => node([script], env(r))));
    for (const [r, x] of ranks.entries()) {
      expect(x.code, `rank ${r}: ${x.stdout}${x.stderr}`).toBe(3);
      const out = JSON.parse(x.stdout.trim().split('\n').at(-1)!) as { code: string; message: string };
      expect(out.code, out.message).toBe('RING_ERR_RENDEZVOUS');
      expect(out.message).toMatch(new RegExp(`file store ${dir}: refusing a directory that is owned by uid ${NOBODY}( \\(\\w+\\))? with mode 0755, not by this user, uid 0`));
      console.log(`rank ${r}: refused in ${x.ms.toFixed(0)} ms (process start included): ${out.message.slice(0, 160)}...`);
    }
    // Nothing of the job's was written there, and the planted token is as it was.
    expect(JSON.parse(readFileSync(join(dir, 'token'), 'utf8')).value).toBe(planted);
    expect(readdirSync(dir)).toEqual(['token']);
  });
});
