import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { readFileSync, readlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { RingInvalidArgError } from '../errors.js';

/**
 * Which address of this machine other machines can reach.
 *
 * A rank advertises one address in the rendezvous table; its neighbours connect there. The right
 * one is the address of the interface that routes to the peers. In order:
 *   1. an explicit address (init({ host }) / RINGREDUCE_HOST);
 *   2. an interface named by the user (--iface / RINGREDUCE_IFACE): its first IPv4 address;
 *   3. the local address of the route to the rendezvous store: the kernel picks it when a UDP
 *      socket is "connected" to the store host (no packet is sent);
 *   4. without a store host (file:// store): loopback when the launcher says every rank runs on
 *      this host (local size = world size), else the route of the default gateway, else the first
 *      non-loopback interface, else loopback.
 */

/** True for 127.0.0.0/8, ::1, their IPv4-mapped forms, and 'localhost'. */
export function isLoopback(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[|\]$/g, '');
  if (a === 'localhost' || a === '::1' || a === '0:0:0:0:0:0:0:1') return true;
  const v4 = a.startsWith('::ffff:') ? a.slice(7) : a;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

/** The first address of interface `name` (IPv4 preferred); a typed error listing the interfaces otherwise. */
export function interfaceAddress(name: string, what = 'RINGREDUCE_IFACE'): string {
  const all = networkInterfaces();
  const addrs = all[name];
  if (!addrs || addrs.length === 0) {
    const names = Object.keys(all).join(', ') || 'none';
    throw new RingInvalidArgError(`${what}: no network interface '${name}' on ${hostname()} (interfaces: ${names})`);
  }
  const pick = addrs.find((a) => a.family === 'IPv4') ?? addrs.find((a) => a.family === 'IPv6' && !a.address.startsWith('fe80'));
  if (!pick) throw new RingInvalidArgError(`${what}: interface '${name}' on ${hostname()} has no usable IPv4 or IPv6 address`);
  return pick.address;
}

/** Every address of every interface of this machine (plus the loopback names). */
export function localAddresses(): Set<string> {
  const out = new Set<string>(['localhost', '127.0.0.1', '::1']);
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address);
  return out;
}

/** The local address the kernel would use to send to `host` (resolved first if it is a name). */
export async function routeAddress(host: string): Promise<string> {
  const target = isIP(host) ? host : (await lookup(host)).address;
  const family = isIP(target) === 6 ? 'udp6' : 'udp4';
  const address = await new Promise<string>((resolve, reject) => {
    const sock = createSocket(family);
    const done = (e: Error | undefined, a?: string) => {
      sock.close();
      if (e) reject(e);
      else resolve(a!);
    };
    sock.once('error', (e) => done(e));
    // connect() on UDP only sets the default destination: the route lookup happens, no packet leaves.
    sock.connect(9, target, () => {
      try {
        done(undefined, sock.address().address);
      } catch (e) {
        done(e as Error);
      }
    });
  });
  // Linux answers 0.0.0.0 for a broadcast destination: no usable route.
  if (isUnspecified(address)) throw new Error(`no route to ${host}`);
  return address;
}

const isUnspecified = (a: string): boolean => a === '0.0.0.0' || a === '::';

/** Where to look when there is no store host to route to: the default route, else any non-loopback interface. */
export async function defaultAddress(): Promise<AddressChoice> {
  try {
    // 198.51.100.0/24 is TEST-NET-2: only used for the route lookup, nothing is sent.
    const a = await routeAddress('198.51.100.1');
    if (!isLoopback(a) && !isUnspecified(a)) return { address: a, how: 'the interface of the default route (no store host to route to)' };
  } catch {
    // no default route (e.g. an isolated network): fall through to the interface list
  }
  for (const [name, list] of Object.entries(networkInterfaces())) {
    for (const a of list ?? []) {
      if (!a.internal && a.family === 'IPv4') return { address: a.address, how: `the first non-loopback interface, ${name} (no default route, no store host)` };
    }
  }
  return { address: '127.0.0.1', how: 'loopback: this host has no other interface' };
}

export interface AddressChoice {
  address: string;
  /** How it was chosen, for --verbose and error messages. */
  how: string;
}

/** Picks the address this rank advertises (see the order above). */
export async function chooseAddress(o: { host?: string; iface?: string; storeHost?: string; allLocal?: boolean }): Promise<AddressChoice> {
  if (o.host) return { address: o.host, how: 'set by RINGREDUCE_HOST / options.host' };
  if (o.iface) return { address: interfaceAddress(o.iface), how: `interface ${o.iface} (RINGREDUCE_IFACE / --iface)` };
  if (o.storeHost) {
    try {
      return { address: await routeAddress(o.storeHost), how: `the route to the rendezvous store at ${o.storeHost}` };
    } catch {
      // unresolvable or unroutable store host: the store connection will say so; use the default
    }
  }
  // Nothing to route to; ports on loopback are not reachable from the network at all.
  if (o.allLocal) return { address: '127.0.0.1', how: 'loopback: the launcher says every rank runs on this host (local size = world size)' };
  return defaultAddress();
}

/**
 * Which process-id namespace of which boot this process lives in: two ranks that share it name
 * each other's processes by the same pids (so one may read the other's memory: see peerRead).
 */
export function pidSpace(): string {
  try {
    return `${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()} ${readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    return '';
  }
}

/**
 * Identifies the kernel and network namespace a rank runs in (its host key): two ranks can reach
 * each other over loopback exactly when both match, and only then do their links use shared
 * memory. The kernel is named by its boot id (containers on one machine share it, even with
 * different host names); without /proc, by the host name.
 */
export function machineKey(): string {
  const read = (path: string, f: (p: string) => string) => {
    try {
      return f(path).trim();
    } catch {
      return '';
    }
  };
  const boot = read('/proc/sys/kernel/random/boot_id', (p) => readFileSync(p, 'utf8'));
  const netns = read('/proc/self/ns/net', readlinkSync);
  return boot ? `${boot} ${netns}` : hostname();
}
