import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ringrunBin, root } from './helpers/run.js';

/**
 * ringrun across "hosts" for real: three network namespaces (rr7-<tag>h1..h3), each with its own
 * address 10.77.<tag>.11..13 on a veth whose other end is on a bridge (rr7-<tag>br, 10.77.<tag>.1)
 * in the root namespace, where ringrun and its store run. The --rsh command is
 * test/fixtures/rsh-netns.sh: it runs the remote command inside the namespace that owns the
 * address, in a session of its own, so only the end of its stdin can stop it (as with ssh).
 * Ranks must then advertise their own namespace's address (loopback would not reach), find the
 * store over the bridge, and be torn down across "hosts" when one fails.
 *
 * Needs root and iproute2; skipped with the reason otherwise. Everything is deleted in afterAll.
 */

const tag = String(process.pid % 250);
const net = `10.77.${tag}`;
const nsName = (i: number) => `rr7-${tag}h${i}`;
const bridge = `rr7-${tag}br`;
const hostAddr = (i: number) => `${net}.1${i}`;
const HOSTS = [1, 2, 3];
const NS_IFACE = 'rr7-eth';
const rsh = join(root, 'test', 'fixtures', 'rsh-netns.sh');
const rank = join(root, 'test', 'fixtures', 'multihost-rank.mjs');
const hostkeyRank = join(root, 'test', 'fixtures', 'hostkey-rank.mjs');
const RUN_DEADLINE_MS = 45_000;

function ip(...args: string[]): { ok: boolean; out: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/** Why these tests cannot run here, or undefined. A probe namespace is created and deleted. */
function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const probe = `rr7-${tag}probe`;
  const r = ip('netns', 'add', probe);
  if (!r.ok) return `'ip netns add' is not permitted here: ${r.out.trim()}`;
  ip('netns', 'del', probe);
  return undefined;
}
const skip = skipReason();
if (skip) console.warn(`test/multihost.test.ts skipped: ${skip}`);

function setUp(): void {
  tearDown(); // leftovers of an earlier run with the same tag
  const must = (...args: string[]) => {
    const r = ip(...args);
    if (!r.ok) throw new Error(`ip ${args.join(' ')}: ${r.out}`);
  };
  must('link', 'add', bridge, 'type', 'bridge');
  must('addr', 'add', `${net}.1/24`, 'dev', bridge);
  must('link', 'set', bridge, 'up');
  for (const i of HOSTS) {
    const ns = nsName(i);
    must('netns', 'add', ns);
    must('link', 'add', `rr7-${tag}v${i}`, 'type', 'veth', 'peer', 'name', `rr7-${tag}p${i}`);
    must('link', 'set', `rr7-${tag}p${i}`, 'netns', ns);
    must('link', 'set', `rr7-${tag}v${i}`, 'master', bridge, 'up');
    // The same interface name on every "host", as on a real cluster (for --iface).
    must('-n', ns, 'link', 'set', `rr7-${tag}p${i}`, 'name', NS_IFACE);
    must('-n', ns, 'addr', 'add', `${hostAddr(i)}/24`, 'dev', NS_IFACE);
    must('-n', ns, 'link', 'set', NS_IFACE, 'up');
    must('-n', ns, 'link', 'set', 'lo', 'up');
  }
}

function tearDown(): void {
  for (const i of HOSTS) {
    // Anything still running in a namespace was started by these tests: stop it by pid.
    for (const pid of nsPids(i)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    ip('netns', 'del', nsName(i));
    ip('link', 'del', `rr7-${tag}v${i}`);
  }
  ip('link', 'del', bridge);
}

/** Processes inside namespace i (zombies included: `ip netns pids` lists every task). */
function nsPids(i: number): number[] {
  const r = ip('netns', 'pids', nsName(i));
  return r.ok ? r.out.split('\n').filter((l) => /^\d+$/.test(l.trim())).map(Number) : [];
}

function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();
let scratch: string;

/** Runs ringrun in the root namespace, or inside namespace `inNs` (as if started on that host). */
function ringrun(args: string[], onOutput?: (stdout: string, stderr: string) => void, inNs?: number): Promise<Finished> {
  const argv = [process.execPath, ringrunBin, ...args];
  if (inNs !== undefined) argv.unshift('ip', 'netns', 'exec', nsName(inNs));
  return run(argv[0], argv.slice(1), onOutput);
}

function run(cmd: string, args: string[], onOutput?: (stdout: string, stderr: string) => void): Promise<Finished> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: root });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    onOutput?.(stdout, stderr);
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} still running after ${RUN_DEADLINE_MS} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, RUN_DEADLINE_MS);
    child.once('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Waits until no process is left in any namespace (ringrun waits for its ranks; this allows a moment). */
async function expectNamespacesEmpty(): Promise<void> {
  const deadline = Date.now() + 3000;
  let left = HOSTS.flatMap((i) => nsPids(i).filter(running));
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = HOSTS.flatMap((i) => nsPids(i).filter(running));
  }
  expect(left, 'processes left in the rr7- namespaces').toEqual([]);
}

const show = (r: Finished) => `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
const hostList = HOSTS.map((i) => `${hostAddr(i)}:1`).join(',');

describe.skipIf(skip !== undefined)('ringrun -H across three network namespaces', () => {
  beforeAll(() => {
    if (!existsSync(join(root, 'dist', 'launcher', 'remote.js'))) throw new Error('build first: npx tsc -p tsconfig.build.json');
    scratch = mkdtempSync(join(tmpdir(), 'rr7-mh-'));
    setUp();
  });

  afterEach(() => {
    for (const c of children) c.kill('SIGKILL');
    children.clear();
  });

  afterAll(() => {
    tearDown();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('examples/allreduce.js: exact results, each rank on its own host and address, store over the bridge', async () => {
    // The namespaces share this kernel's /dev/shm, but each is a host key of its own: payloads cross the bridge as between hosts.
    const r = await ringrun(['--verbose', '-H', hostList, '--rsh', rsh, '-x', 'COUNT=300007', 'node', 'examples/allreduce.js']);
    if (process.env.RR_SHOW_OUTPUT) console.log(`ringrun --verbose -H ${hostList} --rsh ${rsh} -x COUNT=300007 node examples/allreduce.js\n${show(r)}`);
    expect(r.code, show(r)).toBe(0);
    for (const k of [0, 1, 2]) {
      // 3 ranks: sum[i] = 3 (i % 1000) + 0+1+2; allgather [0,1,2]; rank k's reducescatter segment of [0..5] * 3.
      expect(r.stdout).toContain(
        `[1,${k}]<stdout>:rank ${k}/3: allreduce of 300007 floats in `,
      );
      const line = r.stdout.split('\n').find((l) => l.startsWith(`[1,${k}]<stdout>:rank ${k}/3`))!;
      expect(line).toContain(', 0 wrong; sum[0..2]=3,6,9; allgather=[0,1,2]; broadcast=3.14159; ');
      expect(line).toContain(`reducescatter=[${6 * k},${6 * k + 3}]`);
      // Each rank advertises its own namespace's address, found through the route to the store.
      expect(r.stderr).toMatch(new RegExp(`\\[1,${k}\\]<stderr>:ringreduce: rank ${k}: ring links listen on ws://${hostAddr(k + 1).replace(/\./g, '\\.')}:\\d+ \\(the route to the rendezvous store at ws://${net.replace(/\./g, '\\.')}\\.1:\\d+\\)`));
      expect(r.stderr).toContain(`ringrun: host ${hostAddr(k + 1)}: ready (node=`);
    }
    expect(r.stderr).toMatch(new RegExp(`ringrun: rendezvous store listens on ws://${net.replace(/\./g, '\\.')}\\.1:\\d+`));
    await expectNamespacesEmpty();
  });

  it('two ranks per host: LOCAL_RANK / LOCAL_WORLD_SIZE per host, exact results', async () => {
    const r = await ringrun(['-H', `${hostAddr(1)}:2,${hostAddr(2)}:2`, '--rsh', rsh, 'node', rank]);
    expect(r.code, show(r)).toBe(0);
    for (const k of [0, 1, 2, 3]) {
      expect(r.stdout).toContain(`[1,${k}]<stdout>:rank ${k}/4: local ${k % 2}/2, 0 wrong of 100003`);
      // Every process of the machine was searched for the token: no command line shows it.
      expect(r.stdout).toContain(`[1,${k}]<stdout>:rank ${k}: token set, on 0 command lines`);
    }
    await expectNamespacesEmpty();
  });

  it('two hosts x two ranks: shared memory inside each host, sockets between them (the host key), exact results', async () => {
    // The namespaces share this kernel's /dev/shm, so an offer between them would succeed: only the
    // host key (boot id + network namespace) keeps their payloads on the bridge.
    const r = await ringrun(['--verbose', '-H', `${hostAddr(1)}:2,${hostAddr(2)}:2`, '--rsh', rsh, 'node', hostkeyRank]);
    if (process.env.RR_SHOW_OUTPUT) console.log(`ringrun --verbose -H ${hostAddr(1)}:2,${hostAddr(2)}:2 --rsh ${rsh} node ${hostkeyRank}\n${show(r)}`);
    expect(r.code, show(r)).toBe(0);
    const host = (k: number) => (k < 2 ? 1 : 2);
    const other = (k: number) => (k < 2 ? [2, 3] : [0, 1]);
    for (const k of [0, 1, 2, 3]) {
      // Regions mapped in rank k's process, by the rank that made them: its own host's ranks only.
      const mine = k < 2 ? '0,1' : '2,3';
      expect(r.stdout).toContain(`[1,${k}]<stdout>:rank ${k}/4: local ${k % 2}/2, 0 wrong; shm regions mapped from ranks [${mine}]`);
      const said = (what: string, peer: number) => {
        const way = host(peer) === host(k) ? 'shared memory' : `the socket (rank ${peer} is on another host: boot id or network namespace differ)`;
        expect(r.stderr, show(r)).toContain(`[1,${k}]<stderr>:ringreduce: rank ${k}: ${what} rank ${peer}: payloads through ${way}\n`);
      };
      said('ring link to', (k + 1) % 4);
      said('ring link from', (k + 3) % 4);
      for (let peer = 0; peer < 4; peer++) {
        if (peer === k) continue;
        said('p2p link to', peer);
        said('p2p link from', peer);
      }
      for (const p of other(k)) expect(r.stderr).not.toMatch(new RegExp(`\\[1,${k}\\]<stderr>:ringreduce: rank ${k}: \\w+ link (to|from) rank ${p}: payloads through shared memory`));
    }
    // Sockets between hosts are the normal case: nothing to warn about.
    expect(r.stderr).not.toMatch(/warning: .*(shared|socket)/);
    await expectNamespacesEmpty();
  });

  let killed = false;
  it("killing one host's rank stops the ranks on the other hosts; ringrun exits 137 naming it", async () => {
    const pidDir = mkdtempSync(join(scratch, 'pids-'));
    const r = await ringrun(['-H', hostList, '--rsh', rsh, '-x', 'HOLD=1', '-x', `PID_DIR=${pidDir}`, 'node', rank], (stdout) => {
      // Once every rank holds, kill rank 1 (on the second "host") from outside, as a crash would.
      if ([0, 1, 2].every((k) => stdout.includes(`rank ${k}: holding`)) && !killed) {
        killed = true;
        process.kill(Number(readFileSync(join(pidDir, 'rank-1.pid'), 'utf8')), 'SIGKILL');
      }
    });
    if (process.env.RR_SHOW_OUTPUT) console.log(`ringrun -H ${hostList} --rsh ${rsh} -x HOLD=1 -x PID_DIR=... node ${rank}\n${show(r)}`);
    expect(killed, show(r)).toBe(true);
    expect(r.code, show(r)).toBe(137);
    expect(r.stderr).toMatch(new RegExp(`^ringrun: rank 1 on host ${hostAddr(2).replace(/\./g, '\\.')} \\(local ssh pid \\d+\\) exited with code 137$`, 'm'));
    expect(r.stderr).toMatch(/\[1,1\]<stderr>:ringrun-remote: rank 1 \(pid \d+ on .+\) was killed by signal SIGKILL/);
    expect(r.stderr).toContain('ringrun: stopping the other 2 ranks\n');
    const pids = readdirSync(pidDir).map((f) => Number(readFileSync(join(pidDir, f), 'utf8')));
    expect(pids).toHaveLength(3);
    expect(pids.filter(running), 'ranks still running').toEqual([]);
    await expectNamespacesEmpty();
  });

  it('SIGKILL to ringrun (no teardown at all): the closed sessions stop every remote rank', async () => {
    const pidDir = mkdtempSync(join(scratch, 'pids-'));
    const child = spawn(process.execPath, [ringrunBin, '--grace', '1', '-H', hostList, '--rsh', rsh, '-x', 'HOLD=1', '-x', `PID_DIR=${pidDir}`, 'node', rank], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: root,
    });
    children.add(child);
    let stdout = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const deadline = Date.now() + RUN_DEADLINE_MS;
    while (![0, 1, 2].every((k) => stdout.includes(`rank ${k}: holding`))) {
      if (Date.now() > deadline) throw new Error(`ranks did not start: ${stdout}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const pids = readdirSync(pidDir).map((f) => Number(readFileSync(join(pidDir, f), 'utf8')));
    expect(pids.filter(running)).toHaveLength(3);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    children.delete(child);
    // Only the end of their stdin tells the bootstraps: they SIGTERM their ranks and exit.
    await expectNamespacesEmpty();
    expect(pids.filter(running), 'ranks still running').toEqual([]);
  });

  const haveOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!haveOpenssl)('--tls-cert/--tls-key/--tls-ca across the hosts: store and links over wss://, exact results (skipped without openssl)', async () => {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    const f = (n: string) => join(scratch, n);
    for (const args of [
      ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=rr7 test ca'],
      ['req', ...ec, '-keyout', f('rank.key'), '-out', f('rank.csr'), '-subj', '/CN=rank'],
      ['x509', '-req', '-in', f('rank.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('rank.pem'), '-days', '1'],
    ]) {
      const o = spawnSync('openssl', args, { encoding: 'utf8' });
      expect(o.status, o.stderr).toBe(0);
    }
    const r = await ringrun(['--verbose', '-H', hostList, '--rsh', rsh, '--tls-cert', f('rank.pem'), '--tls-key', f('rank.key'), '--tls-ca', f('ca.pem'), 'node', rank]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`ringrun: rendezvous store listens on wss://${net.replace(/\./g, '\\.')}\\.1:\\d+`));
    for (const k of [0, 1, 2]) {
      expect(r.stdout).toContain(`[1,${k}]<stdout>:rank ${k}/3: local 0/1, 0 wrong of 100003`);
      expect(r.stderr).toMatch(new RegExp(`\\[1,${k}\\]<stderr>:ringreduce: rank ${k}: ring links listen on wss://${hostAddr(k + 1).replace(/\./g, '\\.')}:`));
    }
    await expectNamespacesEmpty();
  });

  const haveMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!haveMpirun)("Open MPI's mpirun across the hosts with RINGREDUCE_STORE=file:///dir: no address known up front (skipped without openmpi-bin)", async () => {
    const store = join(scratch, `store-${Date.now()}`);
    // The emulated hosts share /tmp and a hostname: Open MPI's daemons then share their session
    // directories too, and one failed once to create its own ("File exists", exit 213, before any
    // rank ran). A base of this run's own keeps them apart from every other mpirun on the machine.
    const sessions = join(scratch, `ompi-${Date.now()}`);
    mkdirSync(sessions);
    const args = [
      '--allow-run-as-root', '--mca', 'plm_rsh_agent', rsh, '--mca', 'oob_tcp_if_include', `${net}.0/24`, '--mca', 'orte_tmpdir_base', sessions,
      '-H', HOSTS.map((i) => hostAddr(i)).join(','), '-np', '3',
      '-x', `RINGREDUCE_STORE=file://${store}`, '-x', 'RINGREDUCE_VERBOSE=1', '-x', 'COUNT=100003', 'node', 'examples/allreduce.js',
    ];
    const r = await run('mpirun', args);
    if (process.env.RR_SHOW_OUTPUT) console.log(`mpirun ${args.join(' ')}\n${show(r)}`);
    expect(r.code, show(r)).toBe(0);
    for (const k of [0, 1, 2]) {
      const line = r.stdout.split('\n').find((l) => l.startsWith(`rank ${k}/3: allreduce of 100003 floats`));
      expect(line, show(r)).toContain(', 0 wrong; sum[0..2]=3,6,9; allgather=[0,1,2]; broadcast=3.14159; ');
      expect(line).toContain(`reducescatter=[${6 * k},${6 * k + 3}]`);
      // No store host to route to, no default route in the namespaces: each rank's own interface.
      expect(r.stderr).toMatch(new RegExp(`ringreduce: rank ${k}: ring links listen on ws://${net.replace(/\./g, '\\.')}\\.1[1-3]:\\d+ \\(the first non-loopback interface, ${NS_IFACE}`));
    }
    // The ranks cleaned up after themselves: entries and the shared token are gone.
    expect(readdirSync(store)).toEqual([]);
    await expectNamespacesEmpty();
  });

  it('ranks on different hosts that advertise loopback get a typed error naming them', async () => {
    const r = await ringrun(['-H', hostList, '--rsh', rsh, '-x', 'RINGREDUCE_HOST=127.0.0.1', '--start-timeout', '20', 'node', rank]);
    expect(r.code, show(r)).not.toBe(0);
    expect(r.stderr).toMatch(/(?:RingRendezvousError|RING_ERR_RENDEZVOUS(?: at \S+)?): rank \d: the ranks run on 3 machines \(or network namespaces\) but rank 0 \(.+: 127\.0\.0\.1\), rank 1 \(.+\), rank 2 \(.+\) advertise a loopback address/);
    expect(r.stderr).toContain('set RINGREDUCE_IFACE (ringrun --iface)');
    await expectNamespacesEmpty();
  });

  it('ringrun on one of the hosts with --iface: a local rank plus two remote ones, store on that host', async () => {
    const r = await ringrun(['--verbose', '--iface', NS_IFACE, '-H', hostList, '--rsh', rsh, 'node', rank], undefined, 1);
    expect(r.code, show(r)).toBe(0);
    const addr = (k: number) => hostAddr(k).replace(/\./g, '\\.');
    expect(r.stderr).toContain(`ringrun: host ${hostAddr(1)}: rank 0, on this host`);
    expect(r.stderr).toContain(`ringrun: host ${hostAddr(2)}: rank 1, via ${rsh}`);
    expect(r.stderr).toMatch(new RegExp(`ringrun: rendezvous store listens on ws://${addr(1)}:\\d+`));
    for (const k of [0, 1, 2]) {
      expect(r.stdout).toContain(`[1,${k}]<stdout>:rank ${k}/3: local 0/1, 0 wrong of 100003`);
      expect(r.stderr).toMatch(new RegExp(`\\[1,${k}\\]<stderr>:ringreduce: rank ${k}: ring links listen on ws://${addr(k + 1)}:\\d+ \\(interface ${NS_IFACE}`));
    }
    await expectNamespacesEmpty();
  });

  it('--iface naming an interface this host lacks exits 1 naming it', async () => {
    const r = await ringrun(['--iface', 'rr7-nosuch', '-H', hostList, '--rsh', rsh, 'node', rank]);
    expect(r.code, show(r)).toBe(1);
    expect(r.stderr).toMatch(/^ringrun: --iface: no network interface 'rr7-nosuch' on .+ \(interfaces: .+\)$/m);
    await expectNamespacesEmpty();
  });

  it('preflight: an unreachable host fails fast with exit 1, naming it, and no rank starts', async () => {
    const pidDir = mkdtempSync(join(scratch, 'pids-'));
    const t0 = Date.now();
    const r = await ringrun(['-H', `${hostAddr(1)}:1,${net}.99:1`, '--rsh', rsh, '-x', `PID_DIR=${pidDir}`, 'node', rank]);
    expect(r.code, show(r)).toBe(1);
    expect(r.stderr).toContain(`ringrun: host ${net}.99: cannot connect with '${rsh}' (it said: rsh-netns: ssh: connect to host ${net}.99 port 22: No route to host)`);
    expect(r.stderr).toContain('ringrun: 1 of 2 remote hosts failed the preflight check; no rank was started');
    expect(r.stderr).not.toContain(`host ${hostAddr(1)}:`);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(readdirSync(pidDir)).toEqual([]);
  });
});
