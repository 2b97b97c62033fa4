#!/usr/bin/env node
// Emulated hosts on one machine: K network namespaces on a private bridge, and bench/compare.mjs
// across them (ringreduce, Gloo and Open MPI, same sizes, same run). Needs root and iproute2.
//   sudo node bench/netns.mjs [--hosts 2] [--rate 1gbit] [--keep] [compare.mjs options...]
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
const compare = join(here, 'compare.mjs');
const rsh = join(here, 'rsh-netns.sh');

// ringreduce runs with its defaults: its links use shared memory only between ranks of one host
// key (boot id and network namespace), so between the emulated hosts payloads cross the bridge,
// and the ranks of one host (--per-host 2) share memory as on a real machine.

const PREFIX = 'rrnb-'; // bench/rsh-netns.sh looks only at namespaces named so
const IFACE = 'rrnb0'; // the same interface name on every emulated host (ringrun --iface, GLOO_SOCKET_IFNAME)

const usage = `Usage: node bench/netns.mjs [--hosts K] [--per-host R] [--rate RATE] [--subnet A.B.C.0/24] [--keep]
                           [compare.mjs options: --sizes, --iters, --warmup, --small-iters, --op, --rr-env,
                            --ceiling, --plot, --json]
       node bench/netns.mjs --down

Builds K emulated hosts on this machine and runs bench/compare.mjs across them, so a multi-host
figure can be reproduced anywhere (as root): K network namespaces (${PREFIX}<pid>-h1..hK), each
with one veth interface '${IFACE}' whose other end is on a bridge in a namespace of its own
(${PREFIX}<pid>-hub), addresses .1...K in a private /24 that nothing on this machine uses. Nothing
is added to the root namespace. compare.mjs runs inside host 1 (with its own host name) and
starts ringreduce (ringrun -H), Gloo (one torch.distributed process per host) and Open MPI
(mpirun -H) on the hosts through bench/rsh-netns.sh, a stand-in for ssh that runs a command in the
namespace owning an address. Every library's ranks are unbound (the hosts share this machine's
cores). The namespaces are removed on exit, also on errors and Ctrl-C, unless --keep.

  --hosts K      emulated hosts (default 2)
  --per-host R   ranks per host (default 1): N = K x R
  --rate RATE    shape each host's link with tc tbf to RATE (e.g. 1gbit, 500mbit) in both
                 directions, as a full-duplex NIC: on the host's interface and on its bridge
                 port (burst max(128 KiB, 4 ms at RATE), latency 20 ms). Without it the links run
                 at whatever veth and the CPUs manage. (netem delay/loss needs a kernel with netem.)
  --subnet NET   the /24 to use (default: the first free one of 10.213.X.0/24, X from 17 up);
                 refused if an address or route of the root namespace or of any existing
                 namespace falls in it
  --keep         leave the namespaces up afterwards (remove them with --down)
  --down         remove the namespaces of earlier runs whose netns.mjs is no longer running
  -h, --help     this help
Everything else goes to compare.mjs (see node bench/compare.mjs --help), e.g.
  node bench/netns.mjs --hosts 4 --sizes 4,64M --iters 10 --json rows.json --plot busbw.svg
  node bench/netns.mjs --hosts 2 --sizes 64M --ceiling   (adds bench/tcp_ring.py's plain-TCP ring)
`;

const bad = (what) => {
  console.error(`netns: ${what}\n(see node bench/netns.mjs --help)`);
  process.exit(2);
};

// Our own options; the rest is passed through to compare.mjs.
const argv = process.argv.slice(2);
const opts = { hosts: 2, perHost: 1, rate: undefined, subnet: undefined, keep: false, down: false };
const passed = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
  const value = () => inline ?? (i + 1 < argv.length ? argv[++i] : bad(`${flag} needs a value`));
  const count = (v, name) => (/^[0-9]+$/.test(v) && Number(v) >= 1 ? Number(v) : bad(`${name} must be a positive integer, got '${v}'`));
  switch (flag) {
    case '-h':
    case '--help':
      process.stdout.write(usage);
      process.exit(0);
    case '--hosts':
      opts.hosts = count(value(), '--hosts');
      break;
    case '--per-host':
      opts.perHost = count(value(), '--per-host');
      break;
    case '--rate':
      opts.rate = value();
      break;
    case '--subnet':
      opts.subnet = value();
      break;
    case '--keep':
      opts.keep = true;
      break;
    case '--down':
      opts.down = true;
      break;
      break;
    case '--np':
    case '--rsh':
    case '--iface':
      bad(`${flag} is set by netns.mjs (N = --hosts x --per-host)`);
    default:
      passed.push(a);
  }
}
if (opts.hosts * opts.perHost < 2) bad('N = --hosts x --per-host must be at least 2');
if (opts.hosts > 200) bad('--hosts: at most 200');

/** Bytes per second of a tc rate like 1gbit, 500mbit, 10mbit, 800kbit. */
function rateBytes(rate) {
  const m = /^(\d+(?:\.\d+)?)(k|m|g)?bit$/i.exec(rate ?? '');
  if (!m) bad(`--rate: '${rate}' is not a rate like 1gbit, 500mbit or 800kbit`);
  return (Number(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9 }[(m[2] ?? '').toLowerCase()]) / 8;
}
const rate = opts.rate === undefined ? undefined : { spec: opts.rate, bytes: rateBytes(opts.rate) };

function ip(...args) {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim() };
}
function must(cmd, ...args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
  return r.stdout;
}
const namespaces = () => (ip('netns', 'list').out.split('\n').map((l) => l.split(' ')[0]).filter(Boolean));

/** Why this cannot run here, or undefined. */
function whyNot() {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const probe = `${PREFIX}${process.pid}-probe`;
  const r = ip('netns', 'add', probe);
  if (!r.ok) return `'ip netns add' is not permitted here: ${r.out}`;
  ip('netns', 'del', probe);
  return undefined;
}

const mine = (pid) => namespaces().filter((ns) => ns.startsWith(`${PREFIX}${pid}-`));

/** Stops what still runs in namespace ns (started by this run), then deletes it. */
function removeNamespace(ns) {
  for (const pid of ip('netns', 'pids', ns).out.split('\n').filter((l) => /^\d+$/.test(l.trim()))) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  ip('netns', 'del', ns);
}

if (opts.down) {
  const alive = (pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return e.code === 'EPERM';
    }
  };
  const stale = namespaces().filter((ns) => {
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(ns);
    return m && (Number(m[1]) === process.pid || !alive(Number(m[1])));
  });
  for (const ns of stale) removeNamespace(ns);
  console.log(stale.length ? `# removed ${stale.join(', ')}` : `# no ${PREFIX}* namespaces of finished runs`);
  process.exit(0);
}

const skip = whyNot();
if (skip) {
  console.error(`netns: cannot build emulated hosts: ${skip}`);
  process.exit(3);
}

/** The IPv4 addresses and routes in use: in the root namespace and in every namespace that exists. */
function usedAddresses() {
  const text = [ip('-4', '-o', 'addr', 'show').out, ip('-4', 'route', 'show', 'table', 'all').out];
  for (const ns of namespaces()) text.push(ip('-n', ns, '-4', '-o', 'addr', 'show').out, ip('-n', ns, '-4', 'route', 'show', 'table', 'all').out);
  return [...text.join('\n').matchAll(/(\d+\.\d+\.\d+)\.\d+(?:\/\d+)?/g)].map((m) => m[1]);
}
function chooseSubnet() {
  const used = new Set(usedAddresses());
  if (opts.subnet) {
    const m = /^(10\.\d+\.\d+|172\.(?:1[6-9]|2\d|3[01])\.\d+|192\.168\.\d+)\.0\/24$/.exec(opts.subnet);
    if (!m) bad(`--subnet: '${opts.subnet}' is not a private A.B.C.0/24`);
    if (used.has(m[1])) bad(`--subnet: ${opts.subnet} is in use on this machine (an address or route falls in it)`);
    return m[1];
  }
  for (let x = 17; x < 255; x++) if (!used.has(`10.213.${x}`)) return `10.213.${x}`;
  bad('no free 10.213.X.0/24: give one with --subnet');
}

const tag = `${PREFIX}${process.pid}`;
const hub = `${tag}-hub`;
const hostNs = Array.from({ length: opts.hosts }, (_, i) => `${tag}-h${i + 1}`);
let net;
const addr = (i) => `${net}.${i + 1}`;

/** compare.mjs's scratch (and Open MPI's session directories): TMPDIR of its own, removed at the end even if it was killed. */
let scratch;
function tearDown() {
  for (const ns of mine(process.pid)) removeNamespace(ns);
}

function build() {
  net = chooseSubnet();
  must('ip', 'netns', 'add', hub);
  must('ip', '-n', hub, 'link', 'add', 'br0', 'type', 'bridge');
  must('ip', '-n', hub, 'link', 'set', 'br0', 'up');
  // tbf: a burst of at least two 64 KiB GSO packets (veth passes them whole), else ~4 ms at the rate.
  const tbf = rate && ['tbf', 'rate', rate.spec, 'burst', String(Math.max(128 << 10, Math.round(rate.bytes * 0.004))), 'latency', '20ms'];
  hostNs.forEach((ns, i) => {
    const port = `p${i + 1}`;
    must('ip', 'netns', 'add', ns);
    // Born inside the namespaces: nothing appears in the root namespace.
    must('ip', '-n', ns, 'link', 'add', IFACE, 'type', 'veth', 'peer', 'name', port, 'netns', hub);
    must('ip', '-n', hub, 'link', 'set', port, 'master', 'br0');
    must('ip', '-n', hub, 'link', 'set', port, 'up');
    must('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    must('ip', '-n', ns, 'addr', 'add', `${addr(i)}/24`, 'dev', IFACE);
    must('ip', '-n', ns, 'link', 'set', IFACE, 'up');
    if (tbf) {
      // Both directions: what the host sends (its interface) and what it receives (its bridge port).
      must('ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', IFACE, 'root', ...tbf);
      must('ip', 'netns', 'exec', hub, 'tc', 'qdisc', 'add', 'dev', port, 'root', ...tbf);
    }
  });
}

let child;
let stopping = false;
function onSignal(sig) {
  if (stopping) return;
  stopping = true;
  console.error(`netns: ${sig}: stopping${opts.keep ? '' : ' and removing the namespaces'}`);
  if (child?.pid) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (!opts.keep) tearDown();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  process.exit(sig === 'SIGINT' ? 130 : 143);
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => onSignal(sig));

let code = 1;
try {
  build();
  const n = opts.hosts * opts.perHost;
  console.log(`# node bench/netns.mjs ${process.argv.slice(2).join(' ')}`);
  console.log(`# ${new Date().toISOString()}, load average ${spawnSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).stdout.split(' ').slice(0, 3).join(' ')}`);
  console.log(`# ${opts.hosts} emulated hosts x ${opts.perHost} rank${opts.perHost > 1 ? 's' : ''} (N=${n}): network namespaces ${hostNs.join(', ')} on a bridge (${hub}), ${net}.0/24, interface ${IFACE}; links ${rate ? `shaped to ${rate.spec} each way (tc tbf)` : 'unshaped (veth)'}`);
  const args = [compare, '--hosts', hostNs.map((_, i) => addr(i)).join(','), '--per-host', String(opts.perHost), '--rsh', rsh, '--iface', IFACE,
    ...passed];
  // compare.mjs runs on host 1, under host 1's name (as rsh-netns.sh gives each host its own).
  scratch = mkdtempSync(join(tmpdir(), `${tag}-`));
  child = spawn('ip', ['netns', 'exec', hostNs[0], 'unshare', '-u', 'sh', '-c', 'hostname "$0" && exec "$@"', hostNs[0], process.execPath, ...args], {
    stdio: 'inherit',
    env: { ...process.env, TMPDIR: scratch },
  });
  code = await new Promise((resolve) => {
    child.on('error', (e) => {
      console.error(`netns: ${e.message}`);
      resolve(1);
    });
    child.on('close', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
  });
} catch (e) {
  console.error(`netns: ${e.message}`);
} finally {
  if (!stopping) {
    if (opts.keep) console.log(`# kept: ${mine(process.pid).join(', ')} (remove with: node bench/netns.mjs --down)`);
    else tearDown();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}
process.exit(code);
