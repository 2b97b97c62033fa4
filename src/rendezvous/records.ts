import { SMALL_OPS, type SmallOps } from '../env.js';
import { RingMismatchError, RingProtocolError, RingRendezvousError } from '../errors.js';
import type { HierarchicalMode } from '../options.js';
import { peerText, peerValue } from '../peer-text.js';
import { isLoopback } from './address.js';
import { hostLayout, type HostLayout } from './hosts.js';

/**
 * Rank records: what each rank publishes in the rendezvous store, and the checks every rank runs
 * on the table of them it reads (ring.ts) before it links to anyone: each record's shape (any
 * token holder may have written it), the settings all ranks must share, loopback addresses across
 * machines, and whether the layout takes the hierarchical all-reduce.
 */

/** What each rank publishes in the store. */
export interface RankRecord {
  host: string;
  port: number;
  size: number;
  chunkBytes: number;
  pid: number;
  hostname: string;
  /** Which machine (and network namespace) the rank runs in: see machineKey(). */
  machine: string;
  /** Whether the rank's links use TLS: every rank must agree. */
  tls: boolean;
  /** Its pid namespace (see pidSpace): ranks in the same one may copy large sends out of each other. */
  pids?: string;
  /** The link protocol this rank speaks (PROTOCOL); absent from versions before it was recorded. */
  protocol?: number;
  /**
   * Its hierarchical all-reduce setting: every rank must come to the same decision with it (see
   * agreeOnLayout). Absent from versions without it.
   */
  hierarchical?: HierarchicalMode;
  /** Its RINGREDUCE_SMALL_OPS setting (absent: 'auto'): every rank must agree. */
  smallOps?: SmallOps;
}

/**
 * The link protocol: bumped whenever what travels between ranks changes shape, so that ranks of
 * different ringreduce versions refuse to form a ring instead of misreading each other (2: the
 * shared-memory regions gained their mailboxes, which moved the slots; 3: links to any rank on
 * named channels, and the point-to-point messages; 4: descriptors of small operations also travel
 * on direct links, channel 'direct').
 */
export const PROTOCOL = 4;

const HIERARCHICAL_MODES: readonly HierarchicalMode[] = ['auto', 'on', 'off'];

/**
 * A rank's record as read from the store (any token holder may have written it): every field of
 * the right type and range, strings of bounded length, or a protocol error naming the rank. Returns
 * a fresh record of the known fields only.
 */
export function checkRecord(rank: number, r: number, t: unknown): RankRecord {
  const bad = (what: string) =>
    new RingProtocolError(`rank ${rank}: the record of rank ${r} in the rendezvous store is malformed: ${what}`, { rank, ranks: [r], op: 'init' });
  if (t === null || typeof t !== 'object' || Array.isArray(t)) throw bad(`record ${peerValue(t)}`);
  const x = t as Record<string, unknown>;
  const int = (f: string, min: number, max: number): number => {
    const v = x[f];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`${f} ${peerValue(v)}`);
    return v;
  };
  const str = (f: string, max: number, min = 0): string => {
    const v = x[f];
    if (typeof v !== 'string' || v.length < min || v.length > max) throw bad(`${f} ${peerValue(v)}`);
    return v;
  };
  const host = str('host', 255, 1);
  if (!/^[\w.:%\-[\]]+$/.test(host)) throw bad(`host ${peerValue(host)}`);
  if (typeof x.tls !== 'boolean') throw bad(`tls ${peerValue(x.tls)}`);
  const rec: RankRecord = {
    host,
    port: int('port', 1, 65535),
    size: int('size', 1, 2 ** 31 - 1),
    chunkBytes: int('chunkBytes', 1, 2 ** 31 - 1),
    pid: int('pid', 0, 2 ** 31 - 1),
    hostname: str('hostname', 255),
    machine: str('machine', 256),
    tls: x.tls,
  };
  if (x.pids !== undefined) rec.pids = str('pids', 256);
  if (x.protocol !== undefined) rec.protocol = int('protocol', 0, 2 ** 31 - 1);
  if (x.hierarchical !== undefined) {
    if (!HIERARCHICAL_MODES.includes(x.hierarchical as HierarchicalMode)) throw bad(`hierarchical ${peerValue(x.hierarchical)}`);
    rec.hierarchical = x.hierarchical as HierarchicalMode;
  }
  if (x.smallOps !== undefined) {
    if (!(SMALL_OPS as readonly unknown[]).includes(x.smallOps)) throw bad(`smallOps ${peerValue(x.smallOps)}`);
    rec.smallOps = x.smallOps as SmallOps;
  }
  return rec;
}

export function checkTable(rank: number, table: RankRecord[]): void {
  for (const field of ['protocol', 'size', 'chunkBytes', 'tls', 'smallOps'] as const) {
    const groups = new Map<number | boolean | string | undefined, number[]>();
    const value = (t: RankRecord) => (field === 'smallOps' ? (t.smallOps ?? 'auto') : t[field]);
    table.forEach((t, r) => groups.set(value(t), [...(groups.get(value(t)) ?? []), r]));
    if (groups.size > 1) {
      const parts = [...groups].map(([v, rs]) => `rank${rs.length > 1 ? 's' : ''} ${rs.join(',')}: ${v ?? 'older than 2'}`);
      const what =
        field === 'size'
          ? 'the world size'
          : field === 'tls'
            ? 'TLS (RINGREDUCE_TLS_CERT/_KEY)'
            : field === 'protocol'
              ? 'the link protocol, i.e. run different ringreduce versions (install the same one everywhere)'
              : field === 'smallOps'
                ? "small operations' route (RINGREDUCE_SMALL_OPS / options.smallOps)"
                : 'chunkBytes';
      throw new RingMismatchError(`rank ${rank}: ranks disagree on ${what} (${parts.join('; ')})`, {
        rank,
        op: 'init',
        field,
      });
    }
  }
}

/**
 * The host layout and whether it takes the hierarchical all-reduce (hosts.ts). Every rank must
 * come to the same answer, since the host and cross-host rings are set up by all ranks or none:
 * each rank's setting is in its record (absent: a version without the hierarchical all-reduce,
 * which never sets them up), so every rank works out every rank's answer, and ranks whose answers
 * differ (say 'auto' and false on a layout that allows it) refuse to form the ring, naming them.
 * Settings that differ but agree on this layout ('auto' and true) are fine.
 */
export function agreeOnLayout(rank: number, table: RankRecord[]): HostLayout {
  const machines = table.map((t) => t.machine);
  const answers = table.map((t) => hostLayout(machines, t.hierarchical ?? 'off'));
  const groups = new Map<string, number[]>();
  table.forEach((t, r) => {
    const v = `${t.hierarchical ?? 'a version without it'} (${answers[r].hierarchical ? 'hierarchical' : 'flat ring'})`;
    groups.set(v, [...(groups.get(v) ?? []), r]);
  });
  if (answers.some((a) => a.hierarchical !== answers[0].hierarchical)) {
    const parts = [...groups].map(([v, rs]) => `rank${rs.length > 1 ? 's' : ''} ${rs.join(',')}: ${v}`);
    throw new RingMismatchError(`rank ${rank}: ranks disagree on the hierarchical all-reduce (options.hierarchical, RINGREDUCE_HIERARCHICAL) (${parts.join('; ')})`, {
      rank,
      op: 'init',
      field: 'hierarchical',
    });
  }
  return answers[rank];
}

/**
 * A rank that advertises a loopback address can only be reached from its own machine. When the
 * ranks span machines (or network namespaces), that is a configuration error: say so on every
 * rank, naming the ranks and the fix, instead of letting the neighbours time out.
 */
export function checkReachable(rank: number, table: RankRecord[]): void {
  const machines = new Set(table.map((t) => t.machine));
  if (machines.size < 2) return;
  const loop = table.flatMap((t, r) => (isLoopback(t.host) ? [r] : []));
  if (loop.length === 0) return;
  const which = loop.map((r) => `rank ${r} (${peerText(table[r].hostname)}: ${table[r].host})`).join(', ');
  throw new RingRendezvousError(
    `rank ${rank}: the ranks run on ${machines.size} machines (or network namespaces) but ${which} advertise${loop.length === 1 ? 's' : ''} a loopback address ` +
      `that the other machines cannot reach; set RINGREDUCE_IFACE (ringrun --iface) to the interface that connects the machines, ` +
      `or RINGREDUCE_HOST to this machine's address, or use a store address that is not loopback`,
    { rank, ranks: loop, op: 'init', field: 'host' },
  );
}
