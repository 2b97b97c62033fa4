import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { WebSocket, WebSocketServer } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RingError } from '../src/index.js';
import { sharedMemoryMap } from '../src/kernels/index.js';
import { closeServer } from '../src/rendezvous/store.js';
import { MAILBOX_HEAD_BYTES, MAILBOX_RING_BYTES } from '../src/transport/shm/mailbox.js';
import { acceptOffer, KIND_SHM_OFFER } from '../src/transport/shm/region.js';
import { Inbox } from '../src/transport/ws/inbox.js';
import { WsLink } from '../src/transport/ws/link.js';
import { connect, listen } from '../src/transport/ws/socket.js';
import { withDeadline } from './helpers/reference.js';
import { root } from './helpers/run.js';

/**
 * Shared-memory regions under attack (issue 14):
 *
 * - row 6: a /dev/shm smaller than the regions (a small tmpfs). Before, the first write into the
 *   region's unbacked pages killed the rank with SIGBUS (ringrun exit 135). Now the region is
 *   reserved up front (posix_fallocate in the addon, zeros written in TypeScript otherwise); on
 *   ENOSPC the link keeps its payloads on the socket, the rank warns once, results are exact.
 *   These run as root in a mount namespace of their own (`unshare -m`) with a small tmpfs over
 *   /dev/shm, which vanishes with the namespace; skipped where that is not possible.
 * - row 9: a token holder offers a "region" that is a symbolic link to another file (or a hard
 *   link, a FIFO, a file of the wrong size or of another user). Before, the rank mapped the
 *   target and wrote 4 bytes into it. Now the path is opened with O_NOFOLLOW and checked with
 *   fstat before anything is mapped; the target is untouched.
 */
const isRoot = process.geteuid?.() === 0;
const hasShm = sharedMemoryMap !== undefined;
/** Generous for a loaded 2-core machine: each job below takes 1-3 s. */
const JOB_DEADLINE_MS = 90_000;

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'rr-hostile-shm-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const canUnshare =
  isRoot && process.platform === 'linux' && spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /dev/shm'], { stdio: 'ignore' }).status === 0;

interface Exit {
  code: number | null;
  out: string;
  ms: number;
}

/** Runs `script` under sh in a mount namespace of its own, where /dev/shm is a tmpfs of `size`. */
function inSmallShm(size: string, script: string, env: NodeJS.ProcessEnv = {}): Promise<Exit> {
  const t0 = performance.now();
  const sh = `mount -t tmpfs -o size=${size} tmpfs /dev/shm || exit 90\n${script}`;
  const p = spawn('unshare', ['-m', 'sh', '-c', sh], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      process.kill(-p.pid!, 'SIGKILL');
      reject(new Error(`${script} (in a ${size} /dev/shm) did not finish within ${JOB_DEADLINE_MS} ms\n${out}`));
    }, JOB_DEADLINE_MS);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, out, ms: performance.now() - t0 });
    });
  });
}

/** ringrun jobs one after the other in one small-/dev/shm namespace, each followed by what is left in /dev/shm; the first failing exit code. */
const ringrunThenList = (...jobs: string[]) =>
  `c=0\n${jobs.map((args) => `node bin/ringrun.js ${args} || { r=$?; [ $c -eq 0 ] && c=$r; }\necho "LEFT:[$(ls -A /dev/shm | tr '\\n' ' ')]"`).join('\n')}\nexit $c`;

function expectExactAllreduce(out: string, size: number): void {
  const sums = [0, 1, 2].map((i) => size * i + (size * (size - 1)) / 2).join(',');
  for (let r = 0; r < size; r++) {
    expect(out, `rank ${r}`).toMatch(new RegExp(`\\[1,${r}\\]<stdout>:rank ${r}/${size}: allreduce of 1000003 floats in [\\d.]+ ms, 0 wrong; sum\\[0\\.\\.2\\]=${sums};`));
  }
}

const warnings = (out: string) => out.split('\n').filter((l) => /cannot reserve a shared-memory region/.test(l));

describe.skipIf(!canUnshare || !hasShm)('(as root, unshare -m) a /dev/shm smaller than the regions (issue 14, row 6)', () => {
  it('reserveFile: the addon (posix_fallocate) and the TypeScript fallback (zeros) give exactly the bytes, zeroed, or throw ENOSPC; createRegion says why and leaves nothing', async () => {
    const dir = join(scratch, 'small');
    mkdirSync(dir);
    const r = await inSmallShm('1m', `mount -t tmpfs -o size=1m tmpfs ${dir} || exit 91\nexec node test/fixtures/shm-reserve.mjs ${dir} 4096 524288 4194304`);
    expect(r.code, r.out).toBe(0);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const backend of ['native', 'ts']) {
      const mine = lines.filter((l) => l.backend === backend);
      expect(mine, `${backend}: ${r.out}`).toEqual([
        { backend, bytes: 4096, ok: true, size: 4096, zeros: true },
        { backend, bytes: 524288, ok: true, size: 524288, zeros: true },
        expect.objectContaining({ backend, bytes: 4194304, ok: false, code: 'ENOSPC' }),
      ]);
    }
    const region = lines.at(-1)!;
    expect(region.made).toMatch(/^cannot reserve a shared-memory region of 4\.1 MiB in \/dev\/shm \(ENOSPC, [\d.]+ MiB free of 1\.0 MiB\)$/);
    expect(region.leftovers).toEqual([]);
  });

  it('ringrun -np 2 in a 1 MiB /dev/shm: exit 0, exact results over sockets, one warning per rank, nothing left in /dev/shm (was: SIGBUS, exit 135)', async () => {
    const r = await inSmallShm('1m', ringrunThenList('-np 2 node examples/allreduce.js'));
    expect(r.code, r.out).toBe(0);
    expectExactAllreduce(r.out, 2);
    const w = warnings(r.out);
    expect(w.map((l) => l.slice(0, 6)).sort(), r.out).toEqual(['[1,0]<', '[1,1]<']);
    expect(w[0]).toMatch(/rank \d: cannot reserve a shared-memory region of 4\.1 MiB in \/dev\/shm \(ENOSPC, .*\): payloads from this rank to ranks on this host go through sockets/);
    expect(r.out).not.toMatch(/SIGBUS/);
    expect(r.out).toContain('LEFT:[]');
    console.log(`1 MiB /dev/shm, -np 2: exit ${r.code} in ${r.ms.toFixed(0)} ms, ${w.length} warnings`);
  });

  it('ringrun -np 3 and -np 4 in a 6 MiB /dev/shm (room for one region): the rank that got one uses it, the others warn once; all-reduce and point-to-point exact', async () => {
    const r = await inSmallShm('6m', ringrunThenList('-np 3 node examples/allreduce.js', '-np 4 node examples/p2p.js'));
    expect(r.code, r.out).toBe(0);
    expectExactAllreduce(r.out, 3);
    expect(r.out.match(/<stdout>:rank \d\/4: from rank \d: .* 0 wrong/g), r.out).toHaveLength(4);
    // Per job, each rank warns at most once (its ring link, and later its point-to-point links).
    for (const job of r.out.split('LEFT:')) {
      const ranks = warnings(job).map((l) => l.slice(0, 5));
      expect(new Set(ranks).size, job).toBe(ranks.length);
    }
    expect(r.out).not.toMatch(/SIGBUS/);
    expect(r.out.match(/LEFT:\[\]/g)).toHaveLength(2);
  });

  it('the TypeScript kernels (RINGREDUCE_NO_NATIVE=1: no shared memory at all) in a 1 MiB /dev/shm: exit 0, exact, no reservation warning', async () => {
    const r = await inSmallShm('1m', ringrunThenList('-np 2 node examples/allreduce.js'), { RINGREDUCE_NO_NATIVE: '1' });
    expect(r.code, r.out).toBe(0);
    expectExactAllreduce(r.out, 2);
    expect(warnings(r.out)).toEqual([]);
  });
});

// ---- row 9 ----------------------------------------------------------------------------------

const PREAMBLE = 64 + 2 * (MAILBOX_HEAD_BYTES + MAILBOX_RING_BYTES);
const SLOTS = 4;
const SLOT_BYTES = 1024;
const SIZE = PREAMBLE + SLOTS * SLOT_BYTES;
/** The victim file's bytes, and the nonce a hostile offer names: the same, so only the file checks can refuse it. */
const FILL = 0x5a;

function offerFor(path: string): Buffer {
  const p = Buffer.from(path);
  const b = Buffer.alloc(12 + 16 + p.length);
  b[0] = KIND_SHM_OFFER;
  b.writeUInt32LE(SLOTS, 4);
  b.writeUInt32LE(SLOT_BYTES, 8);
  b.fill(FILL, 12, 28);
  p.copy(b, 28);
  return b;
}

const regionName = () => `/dev/shm/ringreduce-${process.pid}-${randomBytes(8).toString('hex')}`;

/** A file of the victim's (full of FILL); `untouched()` checks its bytes and times are as they were. */
function victim(path: string, bytes = SIZE) {
  writeFileSync(path, Buffer.alloc(bytes, FILL), { mode: 0o600 });
  const before = statSync(path);
  return {
    path,
    untouched(what: string): void {
      const now = statSync(path);
      const content = readFileSync(path);
      expect(content.length, what).toBe(bytes);
      expect(content.every((x) => x === FILL), `${what}: the target's bytes changed`).toBe(true);
      expect(now.mtimeMs, `${what}: the target's mtime changed`).toBe(before.mtimeMs);
    },
  };
}

describe.skipIf(!hasShm)('an offer that names a file which is not a region (issue 14, row 9)', () => {
  const planted: string[] = [];
  // rmSync removes a symbolic link itself, not its target; and the directory case's directory.
  afterAll(() => planted.forEach((p) => rmSync(p, { recursive: true, force: true })));
  const plant = (make: (path: string) => void) => {
    const p = regionName();
    planted.push(p);
    make(p);
    return p;
  };

  it.each([
    ['a symbolic link to another file of ours', /names a symbolic link/],
    ['a hard link to another file of ours', /is not a region: .* has 2 links/],
    ['a file of ours larger than the offer says', /is not a region: .* has 139712 bytes, not the 135616 of 4 x 1024-byte slots/],
    ['a FIFO', /is not a region: .* is not a regular file/],
  ] as const)('%s: a protocol error naming the peer, before anything is mapped', (what, message) => {
    let target: ReturnType<typeof victim>;
    let path: string;
    if (what.startsWith('a symbolic link')) {
      target = victim(join(scratch, 'precious'));
      path = plant((p) => symlinkSync(target.path, p));
    } else if (what.startsWith('a hard link')) {
      target = victim(`/dev/shm/rr-test-precious-${process.pid}`);
      planted.push(target.path);
      path = plant((p) => linkSync(target.path, p));
    } else if (what.startsWith('a file of ours larger')) {
      path = plant((p) => writeFileSync(p, ''));
      target = victim(path, SIZE + 4096);
    } else {
      path = plant((p) => expect(spawnSync('mkfifo', ['-m', '600', p]).status).toBe(0));
      target = { path, untouched: () => expect(statSync(path).isFIFO()).toBe(true) };
    }
    let thrown: unknown;
    try {
      acceptOffer(offerFor(path), SLOT_BYTES, true, 'rank 2 (test)');
    } catch (e) {
      thrown = e;
    }
    expect(thrown, what).toBeInstanceOf(RingError);
    expect((thrown as RingError).code).toBe('RING_ERR_PROTOCOL');
    expect((thrown as RingError).message).toContain('shared-memory offer from rank 2 (test)');
    expect((thrown as RingError).message).toMatch(message);
    target.untouched(what);
  });

  it('a directory named like a region is declined (sockets), untouched', () => {
    const path = plant((p) => mkdirSync(p, { mode: 0o700 }));
    expect(acceptOffer(offerFor(path), SLOT_BYTES, true, 'rank 2 (test)')).toMatch(/cannot map the peer's region \(EISDIR\)/);
  });

  it.skipIf(!isRoot)("(as root) another user's file of the exact size is declined (sockets), untouched", () => {
    const path = plant((p) => writeFileSync(p, ''));
    const target = victim(path);
    chownSync(path, 65534, 65534);
    expect(acceptOffer(offerFor(path), SLOT_BYTES, true, 'rank 2 (test)')).toMatch(/the peer's region .* belongs to uid 65534, not to this user \(uid 0\)/);
    target.untouched('owned by uid 65534');
  });

  it('over a real socket: a link offered a symlink to a file of ours fails with RING_ERR_PROTOCOL naming the peer; the target stays untouched after the link closes', async () => {
    const target = victim(join(scratch, 'precious-e2e'));
    const path = plant((p) => symlinkSync(target.path, p));
    const { server, endpoint } = await listen('127.0.0.1', 0, 1 << 20);
    try {
      const accepted = new Promise<WebSocket>((resolve) => server.on('connection', resolve));
      const inbox = await connect(endpoint, 1 << 20, Date.now() + 5000, 'the test peer');
      const link = new WsLink(1, 'rank 1 (test peer)', inbox);
      const closed = new Promise<Error | undefined>((resolve) => link.setHandlers({ data: () => {}, control: () => {}, closed: resolve }));
      const peer = await accepted;
      const replies: Buffer[] = [];
      new Inbox(peer).drain((d) => replies.push(d));
      peer.send(offerFor(path));
      const e = await withDeadline(
        link.acceptSharedMemory(true, SLOT_BYTES, 5000).then(
          () => undefined,
          (err: unknown) => err,
        ),
        10_000,
        'acceptSharedMemory',
      );
      expect(e).toBeInstanceOf(RingError);
      expect((e as RingError).code).toBe('RING_ERR_PROTOCOL');
      expect((e as RingError).message).toMatch(/shared-memory offer from rank 1 \(test peer\) names a symbolic link/);
      expect(link.sharedMemory).toBe(false);
      link.close();
      await withDeadline(closed, 5000, 'the link closing');
      target.untouched('after the link closed');
    } finally {
      await closeServer(server as WebSocketServer);
    }
  });
});
