import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { interfaceAddress, isLoopback, localAddresses, routeAddress } from '../rendezvous/address.js';
import { formatHost, storeUrl as wsUrl, type Endpoint, type TlsConfig } from '../rendezvous/store.js';
import { DEFAULT_RSH, type LaunchConfig } from './args.js';
import { isThisHost, placeRanks, type Placement } from './hosts.js';

/**
 * A job's layout, decided before anything starts (job.ts then spawns and supervises): where each
 * rank runs, where the rendezvous store listens and the address each host's ranks reach it at,
 * the rsh command line for a remote host, the variables ringrun exports for its options, and the
 * TLS files read once. Functions of the LaunchConfig; errors are plain Errors with a message for
 * the user (job.ts prints them and exits 1).
 */

/** The package root (dist/launcher/layout.js -> ../..): remote hosts must have it at the same path. */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url)).replace(/\/$/, '');

/** This package's version, from the package.json at PACKAGE_ROOT. */
export function packageVersion(): string {
  return String((JSON.parse(readFileSync(`${PACKAGE_ROOT}/package.json`, 'utf8')) as { version?: unknown }).version);
}

/** Quotes a word for a POSIX shell (the remote command of ssh is shell text). */
export const shellQuote = (w: string): string => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`);

/** One rank's place: its host, whether that is this machine, and its local rank there. */
export interface Slot extends Placement {
  local: boolean;
}

/** Where the store listens, and the address each host's ranks reach it at. */
export interface StorePlan {
  listen: string;
  /** Per remote host; ranks on this host use `local`. */
  remote: Map<string, string>;
  local: string;
}

/** Where each rank runs; without hosts, all on this host. */
export function placeSlots(config: Pick<LaunchConfig, 'np' | 'hosts'>): Slot[] {
  const { np, hosts } = config;
  if (!hosts) return Array.from({ length: np }, (_, r) => ({ host: 'localhost', local: true, localRank: r, localSize: np }));
  const mine = localAddresses();
  const slots = placeRanks(hosts, np).map((p) => ({ ...p, local: isThisHost(p.host, mine) }));
  // `-H localhost:1,myname:1` is one machine twice: count its ranks together.
  const here = slots.filter((s) => s.local);
  here.forEach((s, i) => Object.assign(s, { localRank: i, localSize: here.length }));
  return slots;
}

/** The parameter servers' script, relative to the package root (the same on every host). */
export const SERVER_MAIN_PATH = 'dist/ps/server-main.js';

/**
 * Where each parameter server runs (--servers S): round-robin over the distinct hosts of -H /
 * --hostfile in their order (as BytePS spreads its servers), else all on this host.
 */
export function placeServers(config: Pick<LaunchConfig, 'servers' | 'hosts'>): Array<{ host: string; local: boolean }> {
  const n = config.servers ?? 0;
  if (!config.hosts) return Array.from({ length: n }, () => ({ host: 'localhost', local: true }));
  const mine = localAddresses();
  const hosts = [...new Set(config.hosts.map((h) => h.host))];
  return Array.from({ length: n }, (_, k) => {
    const host = hosts[k % hosts.length];
    return { host, local: isThisHost(host, mine) };
  });
}

/** The rsh command line that runs `remoteCommand` (shell text) on `host`. */
export function rshArgv(config: LaunchConfig, host: string, remoteCommand: string): string[] {
  const { rsh = DEFAULT_RSH, sshPort, sshIdentity } = config;
  return [
    ...rsh,
    ...(sshPort !== undefined ? ['-p', String(sshPort)] : []),
    ...(sshIdentity !== undefined ? ['-i', sshIdentity] : []),
    host,
    remoteCommand,
  ];
}

/**
 * The store's addresses. All ranks here: loopback (or --iface's address). With remote hosts:
 * --iface's address, else for each host the local address of the route to it; the store listens
 * on that address when it is the same for all, else on every interface.
 */
export async function planStore(config: Pick<LaunchConfig, 'iface'>, remoteHosts: string[]): Promise<StorePlan> {
  const { iface } = config;
  const fixed = iface ? interfaceAddress(iface, '--iface') : undefined;
  if (remoteHosts.length === 0) {
    const a = fixed ?? '127.0.0.1';
    return { listen: a, remote: new Map(), local: a };
  }
  if (fixed && isLoopback(fixed)) {
    throw new Error(`--iface ${iface} is a loopback interface (${fixed}), which the remote hosts (${remoteHosts.join(', ')}) cannot reach`);
  }
  const remote = new Map<string, string>();
  for (const host of remoteHosts) {
    let a = fixed;
    if (!a) {
      try {
        a = await routeAddress(host);
      } catch (e) {
        throw new Error(`host ${host}: no route to it from this host (${(e as Error).message}); check the name, or choose the interface with --iface`);
      }
    }
    if (isLoopback(a)) throw new Error(`host ${host} is reached over loopback (${a}) but is not this host: name it by an address the other hosts can reach`);
    remote.set(host, a);
  }
  const distinct = new Set(remote.values());
  const first = remote.get(remoteHosts[0])!;
  return { listen: distinct.size === 1 ? first : '0.0.0.0', remote, local: first };
}

export function loadTls(config: Pick<LaunchConfig, 'tls'>): TlsConfig | undefined {
  const files = config.tls;
  if (!files) return undefined;
  const read = (option: string, path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (e) {
      throw new Error(`${option} ${path}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const tls: TlsConfig = { cert: read('--tls-cert', files.cert), key: read('--tls-key', files.key) };
  if (files.ca) tls.ca = read('--tls-ca', files.ca);
  return tls;
}

/** Variables ringrun sets for its options, on top of -x. */
export function jobExports(config: Pick<LaunchConfig, 'exports' | 'iface' | 'verbose' | 'tls' | 'hierarchical'>): Map<string, string> {
  const { exports, iface, verbose, tls, hierarchical } = config;
  const all = new Map(exports);
  if (iface) all.set('RINGREDUCE_IFACE', iface);
  if (verbose) all.set('RINGREDUCE_VERBOSE', '1');
  if (hierarchical) all.set('RINGREDUCE_HIERARCHICAL', hierarchical === 'auto' ? 'auto' : hierarchical === 'on' ? '1' : '0');
  if (tls) {
    all.set('RINGREDUCE_TLS_CERT', tls.cert);
    all.set('RINGREDUCE_TLS_KEY', tls.key);
    if (tls.ca) all.set('RINGREDUCE_TLS_CA', tls.ca);
  }
  return all;
}

/** --verbose: which ranks run on which host, and how they are reached. */
export function describeHosts(config: Pick<LaunchConfig, 'rsh'>, slots: Slot[]): string[] {
  const byHost = new Map<string, { local: boolean; ranks: number[] }>();
  slots.forEach((s, r) => {
    const h = byHost.get(s.host) ?? { local: s.local, ranks: [] };
    h.ranks.push(r);
    byHost.set(s.host, h);
  });
  return [...byHost].map(([host, h]) => {
    const ranks = h.ranks.length === 1 ? `rank ${h.ranks[0]}` : `ranks ${h.ranks[0]}-${h.ranks[h.ranks.length - 1]}`;
    return `host ${host}: ${ranks}, ${h.local ? 'on this host' : `via ${(config.rsh ?? DEFAULT_RSH)[0]}`}`;
  });
}

/** --verbose: where the store listens and the address each host's ranks reach it at. */
export function describeStore(config: Pick<LaunchConfig, 'iface'>, e: Endpoint, plan: StorePlan, tls: TlsConfig | undefined, anyLocal: boolean): string[] {
  const lines = [`rendezvous store listens on ${wsUrl(e, tls).replace(/\/$/, '')}`];
  const hint = config.iface ? `--iface ${config.iface}` : 'the route to the host';
  for (const [host, a] of plan.remote) lines.push(`ranks on ${host} reach the store at ${formatHost(a)}:${e.port} (${hint})`);
  if (plan.remote.size > 0 && anyLocal) lines.push(`ranks on this host reach the store at ${formatHost(plan.local)}:${e.port}`);
  return lines;
}
