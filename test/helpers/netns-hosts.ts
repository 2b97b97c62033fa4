import { spawnSync } from 'node:child_process';

/**
 * Emulated hosts for tests, as bench/netns.mjs builds them: `count` network namespaces
 * `<prefix>h1..`, each with an interface `<prefix>eth` on a bridge that lives in a namespace of its
 * own (`<prefix>hub`), addresses `<net>.11..` — nothing is added to the root namespace. Each
 * namespace is a host key of its own (boot id + network namespace), so its ranks share memory only
 * with each other. Needs root and iproute2: skipReason says why not.
 */
export interface EmulatedHosts {
  /** Namespace of host i (0-based). */
  ns(i: number): string;
  addr(i: number): string;
  iface: string;
  /** Kills whatever still runs in the namespaces and removes them. */
  down(): void;
  /** Processes still running in any of the namespaces (zombies excluded). */
  running(): number[];
}

function ip(...args: string[]): { ok: boolean; out: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/** Why namespaces cannot be made here (a probe is created and deleted), or undefined. */
export function netnsSkipReason(prefix: string): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const probe = `${prefix}probe`;
  const r = ip('netns', 'add', probe);
  if (!r.ok) return `'ip netns add' is not permitted here: ${r.out.trim()}`;
  ip('netns', 'del', probe);
  return undefined;
}

export function emulatedHosts(prefix: string, count: number, net: string): EmulatedHosts {
  const hub = `${prefix}hub`;
  const iface = `${prefix}eth`;
  const ns = (i: number) => `${prefix}h${i + 1}`;
  const addr = (i: number) => `${net}.${11 + i}`;
  const pids = () =>
    Array.from({ length: count }, (_, i) => ip('netns', 'pids', ns(i)))
      .flatMap((r) => (r.ok ? r.out.split('\n') : []))
      .filter((l) => /^\d+$/.test(l.trim()))
      .map(Number);
  const down = () => {
    for (const pid of pids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (let i = 0; i < count; i++) ip('netns', 'del', ns(i));
    ip('netns', 'del', hub);
  };
  down(); // leftovers of an earlier run with the same prefix
  const must = (...args: string[]) => {
    const r = ip(...args);
    if (!r.ok) throw new Error(`ip ${args.join(' ')}: ${r.out}`);
  };
  must('netns', 'add', hub);
  must('-n', hub, 'link', 'add', 'br0', 'type', 'bridge');
  must('-n', hub, 'link', 'set', 'br0', 'up');
  for (let i = 0; i < count; i++) {
    must('netns', 'add', ns(i));
    // Born inside the namespaces: nothing appears in the root namespace.
    must('-n', hub, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', iface, 'netns', ns(i));
    must('-n', hub, 'link', 'set', `p${i}`, 'master', 'br0', 'up');
    must('-n', ns(i), 'addr', 'add', `${addr(i)}/24`, 'dev', iface);
    must('-n', ns(i), 'link', 'set', iface, 'up');
    must('-n', ns(i), 'link', 'set', 'lo', 'up');
  }
  const running = () =>
    pids().filter((pid) => {
      const r = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'latin1' });
      const stat = r.stdout ?? '';
      return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
    });
  return { ns, addr, iface, down, running };
}
