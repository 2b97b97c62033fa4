import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RingGroup } from '../src/group.js';
import { silentLogger } from '../src/logger.js';
import { resolveOptions, type TlsPem } from '../src/options.js';
import { formRing } from '../src/rendezvous/ring.js';
import { startStoreServer, StoreClient, type StoreServer } from '../src/rendezvous/store.js';
import { connect } from '../src/transport/ws/socket.js';
import { ringrunBin, root, runNode } from './helpers/run.js';

/**
 * Optional TLS (wss://) for the store and the ring links, with certificates made here by openssl:
 * a job CA that signs the ranks' certificate, and another CA with a certificate of its own. Mutual
 * TLS: each side verifies the other against the job CA; the token handshake still runs inside.
 */

const haveOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
if (!haveOpenssl) console.warn('test/tls.test.ts skipped: openssl is not installed');

let dir: string;
const file = (name: string) => join(dir, name);
const pem = (name: string) => readFileSync(file(name), 'utf8');

function openssl(...args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA `name`.pem/.key, and a certificate `name`-rank.pem/.key signed by it. */
function makeCa(name: string): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', file(`${name}.key`), '-out', file(`${name}.pem`), '-days', '2', '-subj', `/CN=ringreduce test ${name}`);
  openssl('req', ...ec, '-keyout', file(`${name}-rank.key`), '-out', file(`${name}-rank.csr`), '-subj', '/CN=rank');
  openssl('x509', '-req', '-in', file(`${name}-rank.csr`), '-CA', file(`${name}.pem`), '-CAkey', file(`${name}.key`), '-CAcreateserial', '-out', file(`${name}-rank.pem`), '-days', '2');
}

describe.skipIf(!haveOpenssl)('TLS', () => {
  let job: TlsPem;
  const token = 'tls-test-token';
  let store: StoreServer | undefined;
  let groups: RingGroup[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'rr-tls-'));
    makeCa('job');
    makeCa('other');
    job = { cert: pem('job-rank.pem'), key: pem('job-rank.key'), ca: pem('job.pem') };
  });

  afterAll(async () => {
    await Promise.all(groups.map((g) => g.shutdown().catch(() => {})));
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a ring of 3 over wss:// gives exact results, point-to-point and groups included', async () => {
    store = await startStoreServer({ host: '127.0.0.1', port: 0, token, worldSize: 3, logger: silentLogger, tls: job });
    const where = `127.0.0.1:${store.endpoint.port}`;
    groups = await Promise.all(
      [0, 1, 2].map((rank) => formRing(resolveOptions({ rank, size: 3, store: where, token, tls: job, logger: silentLogger, hostStore: false }, {}))),
    );
    const count = 200_003;
    const sums = await Promise.all(
      groups.map((g, r) => g.allreduce(Float32Array.from({ length: count }, (_, i) => (i % 977) * (r + 1)), { op: 'sum' })),
    );
    for (const s of sums) {
      let wrong = 0;
      for (let i = 0; i < count; i++) if (s[i] !== (i % 977) * 6) wrong++;
      expect(wrong).toBe(0);
    }
    // Links to any rank (point-to-point, alltoall, a group's ring) run over wss:// too.
    const big = 100_003;
    const shifted = await Promise.all(
      groups.map(async (g, r) => {
        const [, got] = await Promise.all([g.send(Float64Array.from({ length: big }, (_, i) => i + r), { dst: (r + 1) % 3 }), g.recv(new Float64Array(big), { src: (r + 2) % 3 })]);
        return got;
      }),
    );
    shifted.forEach((got, r) => expect([got[0], got[big - 1]]).toEqual([(r + 2) % 3, big - 1 + ((r + 2) % 3)]));
    const a2a = await Promise.all(groups.map((g, r) => g.alltoall(Int32Array.from({ length: 3 * 40_000 }, (_, i) => r * 1_000_000 + i))));
    a2a.forEach(({ data }, r) => expect([data[0], data[40_000], data[80_000]]).toEqual([r * 40_000, 1_000_000 + r * 40_000, 2_000_000 + r * 40_000]));
    const pair = await Promise.all(groups.map((g) => g.newGroup([0, 2])));
    const [s0, , s2] = await Promise.all(pair.map((p, r) => p?.allreduce(Int32Array.of(r + 1))));
    expect([s0?.[0], s2?.[0]]).toEqual([4, 4]);
    // The store speaks TLS only: a plain WebSocket client gets nowhere.
    await expect(StoreClient.connect(store.endpoint, token, 0, Date.now() + 500)).rejects.toThrow(/socket hang up \(does the other side use TLS\?/);
  });

  it('a client whose certificate comes from another CA is refused, by the store and by a rank', async () => {
    const rogue: TlsPem = { cert: pem('other-rank.pem'), key: pem('other-rank.key'), ca: pem('job.pem') };
    const t0 = Date.now();
    const e1 = await StoreClient.connect(store!.endpoint, token, 0, Date.now() + 10_000, rogue).catch((e: unknown) => e);
    expect(e1).toMatchObject({ code: 'RING_ERR_AUTH' });
    expect((e1 as Error).message).toMatch(/the rendezvous store at wss:\/\/127\.0\.0\.1:\d+\/ refused our TLS client certificate/);
    // Refused at once, not retried until the deadline.
    expect(Date.now() - t0).toBeLessThan(5_000);

    const [host, port] = groups[1].address!.split(':');
    const e2 = await connect({ host, port: Number(port) }, 1 << 20, Date.now() + 10_000, 'rank 1', rogue).catch((e: unknown) => e);
    expect(e2).toMatchObject({ code: 'RING_ERR_AUTH' });
    // No certificate at all: refused too.
    const e3 = await connect({ host, port: Number(port) }, 1 << 20, Date.now() + 10_000, 'rank 1', { ca: job.ca } as TlsPem).catch((e: unknown) => e);
    expect(e3).toMatchObject({ code: 'RING_ERR_AUTH' });
  });

  it('a client that trusts another CA refuses the job servers', async () => {
    const wrongTrust: TlsPem = { cert: pem('job-rank.pem'), key: pem('job-rank.key'), ca: pem('other.pem') };
    const e = await StoreClient.connect(store!.endpoint, token, 0, Date.now() + 10_000, wrongTrust).catch((err: unknown) => err);
    expect(e).toMatchObject({ code: 'RING_ERR_AUTH' });
    expect((e as Error).message).toMatch(/TLS handshake with the rendezvous store .* failed: self-signed certificate in certificate chain/);
  });

  it('ringrun --tls-cert --tls-key --tls-ca: store and links over wss://, exact results', async () => {
    const r = await runNode(
      [ringrunBin, '--verbose', '-np', '3', '--tls-cert', file('job-rank.pem'), '--tls-key', file('job-rank.key'), '--tls-ca', file('job.pem'), 'node', join(root, 'examples', 'allreduce.js')],
      { COUNT: '100003' },
      60_000,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/ringrun: rendezvous store listens on wss:\/\/127\.0\.0\.1:\d+/);
    for (const k of [0, 1, 2]) {
      expect(r.stderr).toMatch(new RegExp(`\\[1,${k}\\]<stderr>:ringreduce: rank ${k}: ring links listen on wss://`));
      const line = r.stdout.split('\n').find((l) => l.startsWith(`[1,${k}]<stdout>:rank ${k}/3`));
      expect(line, r.stdout).toContain(', 0 wrong; sum[0..2]=3,6,9; allgather=[0,1,2]; broadcast=3.14159; ');
    }
  });

  it('ringrun with a TLS file that cannot be read exits 1 naming it', async () => {
    const r = await runNode([ringrunBin, '-np', '2', '--tls-cert', file('nope.pem'), '--tls-key', file('job-rank.key'), 'node', '-e', '0'], {}, 20_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ringrun: --tls-cert ${file('nope.pem')}: cannot read it: ENOENT\n`);
  });
});
