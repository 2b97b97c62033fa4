import { randomBytes } from 'node:crypto';
import { constants, promises as fs, readFileSync } from 'node:fs';
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
 * Files are mode 0600. The directory must be this user's and writable by nobody else, and every
 * entry read must be a regular file of this user's that nobody else may write (the token: nor
 * read): otherwise another local user who got there first could have planted the token or a rank's
 * record, and the start stops with an error naming the owner and mode.
 *
 * Once a ring is up, every rank deletes its own entries (all ranks have read them by then), so a
 * directory is empty again after a successful start. A crashed start can leave entries behind; the
 * next job then stops with an error naming the file and who wrote it, rather than connecting to a
 * dead address: delete the files, or use one directory per job (e.g. `file:///shared/rr-$SLURM_JOB_ID`).
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

  /**
   * Creates the directory if needed (mode 0700 for what it creates). A directory that another
   * user owns, or that group or others may write to, is refused: whoever can write there can
   * plant the job token or a rank's record (the first writer of a key wins).
   */
  static async open(dir: string): Promise<FileStore> {
    let st;
    try {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      st = await fs.stat(dir);
      await fs.access(dir, constants.W_OK);
    } catch (e) {
      throw new RingRendezvousError(`file store ${dir}: cannot use the directory: ${(e as Error).message}`, {}, { cause: e });
    }
    const bad = untrusted(st, 0o022);
    if (bad) {
      throw new RingRendezvousError(
        `file store ${dir}: refusing a directory that ${bad}: another user could plant the job token or rank records there; ` +
          `use a directory of your own that only you can write to (chmod go-w, or a fresh one: mkdir -m 700)`,
      );
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
        const e = JSON.parse(await this.readOwn(key)) as Entry;
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

  /**
   * A key's file, read through one descriptor that was checked first: not a symbolic link, ours,
   * and writable by nobody else (the token: not even readable by others).
   */
  private async readOwn(key: string): Promise<string> {
    const path = this.path(key);
    let f: fs.FileHandle;
    try {
      f = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOOP') throw e;
      throw new RingRendezvousError(`file store ${this.dir}: refusing ${path}: it is a symbolic link; delete it`);
    }
    try {
      const st = await f.stat();
      const bad = !st.isFile() ? 'is not a regular file' : untrusted(st, key === TOKEN_KEY ? 0o077 : 0o022);
      if (bad) {
        throw new RingRendezvousError(
          `file store ${this.dir}: refusing ${path}: it ${bad}; another user may have planted it: delete it, and check who can write to ${this.dir}`,
        );
      }
      return await f.readFile('utf8');
    } finally {
      await f.close();
    }
  }

  async release(keys: string[]): Promise<void> {
    await Promise.all(keys.map((k) => fs.unlink(this.path(k)).catch(() => {})));
  }

  close(): void {}
}

/**
 * Why a file or directory of the store is not this user's alone: owned by another user, or with
 * any of the `forbidden` permission bits (0o022: writable by group/others; 0o077: any access).
 * Undefined when it is fine, or where there are no uids (Windows).
 */
function untrusted(st: { uid: number; mode: number }, forbidden: number): string | undefined {
  const me = process.geteuid?.();
  if (me === undefined) return undefined;
  const mode = `mode 0${(st.mode & 0o7777).toString(8)}`;
  if (st.uid !== me) return `is owned by ${user(st.uid)} with ${mode}, not by this user, ${user(me)}`;
  const bits = st.mode & forbidden;
  if (bits === 0) return undefined;
  const how = [bits & 0o055 ? 'readable' : '', bits & 0o022 ? 'writable' : ''].filter(Boolean).join(' and ');
  const who = [bits & 0o070 ? 'group' : '', bits & 0o007 ? 'others' : ''].filter(Boolean).join(' and ');
  return `is ${how} by ${who} (${mode}, owned by ${user(st.uid)})`;
}

/** "uid 65534 (nobody)": the name from /etc/passwd where there is one (only for error messages). */
function user(uid: number): string {
  try {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[2] === String(uid));
    const name = line?.split(':')[0];
    return name ? `uid ${uid} (${name})` : `uid ${uid}`;
  } catch {
    return `uid ${uid}`;
  }
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
