import { readdirSync, readFileSync } from 'node:fs';

/**
 * Process-group plumbing. A rank leads its own group (pgid = its pid); whatever it starts joins the
 * group unless it asks otherwise, so signalling -pgid reaches the rank's whole tree.
 */

/** kill(2) that reports whether the target existed; EPERM (not ours to signal) counts as not. */
export function killQuietly(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * True while a process of the group is still running. Zombies do not count: a killed grandchild
 * stays a zombie until its new parent reaps it, which can be seconds (an init that reaps
 * periodically) or never (ringrun as PID 1 in a container does not reap strangers), and waiting
 * for that would only delay the exit. Where /proc is unavailable, any member counts.
 */
export function groupAlive(pgid: number): boolean {
  if (!killQuietly(-pgid, 0)) return false;
  const running = runningGroups();
  return running ? running.has(pgid) : true;
}

let scan: { at: number; groups: ReadonlySet<number> | undefined } | undefined;
/** Scans are ~3 ms per 100 processes; a teardown poll asks once per rank, so reuse a fresh one. */
const SCAN_REUSE_MS = 10;

/** The groups that have a process not yet dead (Linux: from /proc/PID/stat), or undefined. */
function runningGroups(): ReadonlySet<number> | undefined {
  if (process.platform !== 'linux') return undefined;
  const now = Date.now();
  if (scan && now - scan.at < SCAN_REUSE_MS) return scan.groups;
  let groups: Set<number> | undefined = new Set<number>();
  try {
    for (const entry of readdirSync('/proc')) {
      if (!/^[0-9]+$/.test(entry)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
      } catch {
        continue; // exited since readdir
      }
      // "pid (comm) state ppid pgrp ...": comm may hold spaces and ')', so parse from the last ')'.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state !== 'Z' && state !== 'X' && state !== 'x') groups.add(Number(pgrp));
    }
  } catch {
    groups = undefined;
  }
  scan = { at: now, groups };
  return groups;
}
