/**
 * How the ranks of a job sit on hosts, and whether the hierarchical all-reduce can use that: a
 * pure function of the rank table (every rank has the same one) and the hierarchical setting (in
 * every rank's record; records.ts agreeOnLayout checks that all ranks reach the same answer), so
 * the ranks decide alike without a message — and set up the host and cross-host rings, or not,
 * all together.
 *
 * A host is a distinct machine key (boot id and network namespace: see address.ts machineKey),
 * hosts are numbered in order of their first rank, and a host's ranks in order of world rank (they
 * need not be contiguous). The hierarchical all-reduce needs at least two hosts, each with the
 * same number L >= 2 of ranks: local rank i of every host then forms the cross-host ring i.
 */
import type { HierarchicalMode } from '../options.js';

export type HostLayout =
  | {
      hierarchical: true;
      /** World ranks of each host, hosts in order of their first rank, ranks ascending. */
      hosts: number[][];
      /** Ranks per host (every host has as many). */
      perHost: number;
    }
  | { hierarchical: false; hosts: number[][]; reason: string };

/** Hosts of a rank table given as each rank's machine key. */
export function hostsOf(machines: readonly string[]): number[][] {
  const byKey = new Map<string, number[]>();
  machines.forEach((m, r) => {
    const h = byKey.get(m);
    if (h) h.push(r);
    else byKey.set(m, [r]);
  });
  return [...byKey.values()];
}

/**
 * How many ranks of the table run on the kernel (boot id) of rank `me`, whatever network namespace
 * each is in: the ranks that share its CPUs. Emulated hosts (namespaces) are one machine here.
 * A machine key without a boot id (no /proc: a host name) stands for itself.
 */
export function ranksOnMachine(machines: readonly string[], me: number): number {
  const boot = (m: string) => m.split(' ')[0];
  const mine = boot(machines[me]);
  return machines.filter((m) => boot(m) === mine).length;
}

/** "2 hosts x 2 ranks", "2 hosts with 3, 1 ranks", "4 ranks on one host". */
export function describeHosts(hosts: readonly number[][]): string {
  const counts = hosts.map((h) => h.length);
  const ranks = (n: number) => `${n} rank${n === 1 ? '' : 's'}`;
  if (hosts.length === 1) return `${ranks(counts[0])} on one host`;
  if (counts.every((c) => c === counts[0])) return `${hosts.length} hosts x ${ranks(counts[0])}`;
  return `${hosts.length} hosts with ${counts.join(', ')} ranks`;
}

export function hostLayout(machines: readonly string[], mode: HierarchicalMode): HostLayout {
  const hosts = hostsOf(machines);
  const flat = (reason: string): HostLayout => ({ hierarchical: false, hosts, reason });
  if (mode === 'off') return flat('hierarchical all-reduce is off (hierarchical: false, RINGREDUCE_HIERARCHICAL=0)');
  const layout = describeHosts(hosts);
  if (hosts.length < 2) return flat(`${layout}: no link between hosts to spare`);
  const perHost = hosts[0].length;
  if (hosts.some((h) => h.length !== perHost)) return flat(`${layout}: hosts with different numbers of ranks`);
  if (perHost < 2) return flat(`${layout}: nothing to reduce within a host`);
  return { hierarchical: true, hosts, perHost };
}

/** This rank's host ring (its host's ranks) and cross-host ring (the ranks of its local index on every host). */
export function subRings(layout: Extract<HostLayout, { hierarchical: true }>, rank: number): { local: number[]; cross: number[] } {
  const local = layout.hosts.find((h) => h.includes(rank));
  if (!local) throw new RangeError(`rank ${rank} is on no host of the layout`);
  const index = local.indexOf(rank);
  return { local, cross: layout.hosts.map((h) => h[index]) };
}
