import { hostname } from 'node:os';

/**
 * Hosts and slots (`-H host1:2,host2:2`, `--hostfile FILE`), and where each rank runs.
 *
 * Ranks fill the hosts in order, like mpirun's default by-slot mapping: with `-H a:2,b:2`, ranks
 * 0 and 1 run on a, ranks 2 and 3 on b. LOCAL_RANK / LOCAL_WORLD_SIZE count the ranks of a host.
 * A host named twice gets the sum of its slots, at its first position.
 */

export interface HostSlots {
  host: string;
  slots: number;
}

export interface Placement {
  host: string;
  localRank: number;
  localSize: number;
}

/** What went wrong in one -H entry or hostfile line; the caller adds where (and throws a UsageError). */
export class HostSpecError extends Error {}

const SLOTS_RE = /^[0-9]+$/;

function slotsOf(v: string, what: string): number {
  const n = SLOTS_RE.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new HostSpecError(`${what} must be a positive integer, got '${v}'`);
  return n;
}

/** A host name or address: no spaces, no commas, no '='; IPv6 addresses in brackets. */
function hostOf(v: string): string {
  const h = v.startsWith('[') && v.endsWith(']') ? v.slice(1, -1) : v;
  if (h === '' || /[\s,=\[\]]/.test(h) || h.startsWith('-')) throw new HostSpecError(`'${v}' is not a host name or address`);
  return h;
}

/** `host`, `host:N` or `[v6addr]:N`. */
function hostColonSlots(entry: string): HostSlots {
  const m = /^(\[[^\]]*\]|[^:]+)(?::(.*))?$/.exec(entry);
  if (!m) throw new HostSpecError(`'${entry}' is not host or host:slots`);
  return { host: hostOf(m[1]), slots: m[2] === undefined ? 1 : slotsOf(m[2], `the slot count in '${entry}'`) };
}

/** `-H host1:2,host2,host3:4` (a host without a count has one slot). */
export function parseHostList(v: string): HostSlots[] {
  if (v.trim() === '') throw new HostSpecError('expects host[:slots][,host[:slots]...], got an empty value');
  return v.split(',').map((entry) => {
    if (entry.trim() === '') throw new HostSpecError(`has an empty entry in '${v}'`);
    return hostColonSlots(entry.trim());
  });
}

/**
 * A hostfile: one host per line as `host slots=N` (Open MPI) or `host:N`, or a bare `host` (one
 * slot); `#` starts a comment; blank lines are skipped. Errors name the line.
 */
export function parseHostfile(text: string): HostSlots[] {
  const out: HostSlots[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    const where = `line ${i + 1}`;
    try {
      const [first, ...rest] = line.split(/\s+/);
      if (rest.length === 0) {
        out.push(hostColonSlots(first));
        return;
      }
      if (first.includes(':') && !first.startsWith('[')) throw new HostSpecError(`'${line}' mixes host:N and slots=N`);
      let slots: number | undefined;
      for (const word of rest) {
        const kv = /^(slots|max_slots|max-slots)=(.*)$/.exec(word);
        if (!kv) throw new HostSpecError(`unknown field '${word}' (expected slots=N)`);
        if (kv[1] === 'slots') slots = slotsOf(kv[2], 'slots');
        else slotsOf(kv[2], kv[1]); // accepted for Open MPI compatibility; ranks never exceed slots anyway
      }
      out.push({ host: hostOf(first), slots: slots ?? 1 });
    } catch (e) {
      if (e instanceof HostSpecError) throw new HostSpecError(`${where}: ${e.message}`);
      throw e;
    }
  });
  if (out.length === 0) throw new HostSpecError('names no hosts');
  return out;
}

/** Merges repeated hosts (their slots add up), keeping the first position. */
export function mergeHosts(list: readonly HostSlots[]): HostSlots[] {
  const byName = new Map<string, HostSlots>();
  for (const h of list) {
    const seen = byName.get(h.host);
    if (seen) seen.slots += h.slots;
    else byName.set(h.host, { ...h });
  }
  return [...byName.values()];
}

export const totalSlots = (hosts: readonly HostSlots[]): number => hosts.reduce((n, h) => n + h.slots, 0);

/** Where each of `np` ranks runs: hosts filled in order (np <= total slots, checked by the parser). */
export function placeRanks(hosts: readonly HostSlots[], np: number): Placement[] {
  const out: Placement[] = [];
  for (const h of hosts) {
    const here = Math.min(h.slots, np - out.length);
    for (let i = 0; i < here; i++) out.push({ host: h.host, localRank: i, localSize: here });
    if (out.length === np) break;
  }
  return out;
}

/**
 * True for names that mean this machine: localhost, loopback addresses, this host's name (full or
 * short), and any address of its interfaces. Those ranks are started directly, without ssh.
 */
export function isThisHost(host: string, localAddresses: ReadonlySet<string>): boolean {
  const h = host.toLowerCase();
  const me = hostname().toLowerCase();
  return h === 'localhost' || h === me || h === me.split('.')[0] || localAddresses.has(h) || /^127\./.test(h) || h === '::1';
}
