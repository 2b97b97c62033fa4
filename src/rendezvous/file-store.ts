import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { RingRendezvousError, RingTimeoutError } from '../errors.js';
import type { RendezvousStore } from './store.js';

/**
 * The rendezvous store as a shared directory (`RINGREDUCE_STORE=file:///shared/dir`), like Gloo's
 * FileStore or torch.distributed's `file://` init: nobody hosts a server and no address needs to
 * be known up front, only a directory every rank can see (NFS, Lustre, a local /tmp for one host).
 *
 * One key is one file, named after the key (`ring/3` -> `ring%2F3`). A value is written to a
 * private temporary file, then hard-linked to its name: link(2) fails if the name exists, so a key
 * is written once and readers never see half a value. Where a filesystem has no hard links, the
 * file is created with O_EXCL and written in place; readers then treat an unparsable file as not
 * yet there. Readers poll the directory (20 ms, backing off to 250 ms) until the deadline.
 *
 * Files are mode 0600. Once a ring is up, every rank deletes its own entries (all ranks have read
 * them by then), so a directory is empty again after a successful start. A crashed start can leave
 * entries behind; the next job then stops with an error naming the file and who wrote it, rather
 * than connecting to a dead address: delete the files, or use one directory per job
 * (e.g. `file:///shared/rr-$SLURM_JOB_ID`).
 */
const POLL_FIRST_MS = 20;
const POLL_MAX_MS = 250;
export const TOKEN_KEY = 'token';

interface Entry {
  value: unknown;
  pid: number;
  host: string;
  at: string;
}

export class FileStore implements RendezvousStore {
  readonly localAddress = undefined;
  readonly where: string;

  private constructor(readonly dir: string) {
    this.where = `file://${dir}`;
  }

  /** Creates the directory if needed (mode 0700 for what it creates). */
  static async open(dir: string): Promise<FileStore> {
    try {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      await fs.access(dir, constants.W_OK);
    } catch (e) {
      throw new RingRendezvousError(`file store ${dir}: cannot use the directory: ${(e as Error).message}`, {}, { cause: e });
    }
    return new FileStore(dir);
  }

  private path(key: string): string {
    return join(this.dir, encodeURIComponent(key));
  }

  /** Writes `value` under `key` unless the key exists; returns what the key holds afterwards. */
  async putIfAbsent(key: string, value: unknown): Promise<{ entry: Entry; mine: boolean }> {
    const entry: Entry = { value, pid: process.pid, host: hostname(), at: new Date().toISOString() };
    const text = JSON.stringify(entry);
    const target = this.path(key);
    const tmp = join(this.dir, `.tmp-${encodeURIComponent(key)}-${process.pid}-${randomBytes(6).toString('hex')}`);
    await fs.writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
    let created: boolean;
    try {
      await fs.link(tmp, target);
      created = true;
    } catch (e) {
      created = (e as NodeJS.ErrnoException).code === 'EEXIST' ? false : await createExclusive(target, text);
    } finally {
      await fs.unlink(tmp).catch(() => {});
    }
    if (created) return { entry, mine: true };
    const existing = await this.read(key, Date.now() + 2000);
    if (!existing) throw new RingRendezvousError(`file store ${this.dir}: '${key}' exists but cannot be read`);
    return { entry: existing, mine: false };
  }

  async set(key: string, value: unknown): Promise<void> {
    const { entry, mine } = await this.putIfAbsent(key, value);
    if (mine || JSON.stringify(entry.value) === JSON.stringify(value)) return;
    throw new RingRendezvousError(
      `file store ${this.dir}: '${key}' is already set (file ${this.path(key)}, written by pid ${entry.pid} on ${entry.host} at ${entry.at}); ` +
        `a stale file from an earlier job? Delete the store's files or use a fresh directory for each job`,
    );
  }

  /** One key's entry, or undefined if it is not (completely) there before `deadline`. */
  private async read(key: string, deadline: number): Promise<Entry | undefined> {
    let wait = POLL_FIRST_MS;
    for (;;) {
      try {
        const e = JSON.parse(await fs.readFile(this.path(key), 'utf8')) as Entry;
        if (e && typeof e === 'object' && 'value' in e) return e;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // ENOENT: not written yet; a SyntaxError: being written in place (no-hard-link filesystems).
        if (code !== undefined && code !== 'ENOENT') throw err;
      }
      if (Date.now() >= deadline) return undefined;
      await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(1, deadline - Date.now()))));
      wait = Math.min(wait * 2, POLL_MAX_MS);
    }
  }

  /**
   * One directory listing per poll, and each file read once it is listed: with N ranks waiting for
   * N keys, a shared filesystem sees N listings per interval, not N * N opens.
   */
  async get(keys: string[], timeoutMs: number): Promise<unknown[]> {
    const deadline = Date.now() + timeoutMs;
    const values = new Map<string, unknown>();
    let wait = POLL_FIRST_MS;
    for (;;) {
      const listed = new Set(await fs.readdir(this.dir));
      for (const k of keys) {
        if (values.has(k) || !listed.has(encodeURIComponent(k))) continue;
        const e = await this.read(k, 0); // listed: there unless half-written (then next round)
        if (e) values.set(k, e.value);
      }
      if (values.size === keys.length) return keys.map((k) => values.get(k));
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(1, deadline - Date.now()))));
      wait = Math.min(wait * 2, POLL_MAX_MS);
    }
    const missing = keys.filter((k) => !values.has(k)).sort();
    throw Object.assign(new RingTimeoutError(`rendezvous store ${this.where}: timed out`, {}), { missing });
  }

  async release(keys: string[]): Promise<void> {
    await Promise.all(keys.map((k) => fs.unlink(this.path(k)).catch(() => {})));
  }

  close(): void {}
}

/** No hard links on this filesystem (EPERM, ENOTSUP...): create with O_EXCL. False if the key exists. */
async function createExclusive(target: string, text: string): Promise<boolean> {
  try {
    await fs.writeFile(target, text, { mode: 0o600, flag: 'wx' });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

/**
 * The job token for a file store when none is configured: the first rank to arrive writes a random
 * one (mode 0600) and every rank reads it, so links are authenticated with a secret that never
 * appears in a command line or an environment; it is as private as the directory. Rank 0 deletes
 * it once the ring is up (releaseSharedToken).
 */
export async function sharedToken(dir: string): Promise<string> {
  const store = await FileStore.open(dir);
  const { entry } = await store.putIfAbsent(TOKEN_KEY, randomBytes(32).toString('hex'));
  if (typeof entry.value !== 'string' || entry.value.length === 0) {
    throw new RingRendezvousError(`file store ${dir}: the token file ${TOKEN_KEY} is malformed; delete it`);
  }
  return entry.value;
}

export async function releaseSharedToken(dir: string): Promise<void> {
  await (await FileStore.open(dir)).release([TOKEN_KEY]);
}
