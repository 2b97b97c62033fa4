import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * CPU binding of the ranks on one host (ringrun --bind-to), as mpirun binds by default.
 *
 * Why: two ranks that poll while they wait (see Communicator.progress) must not end up on the
 * same core while another sits idle. Unbound, Linux sometimes keeps both on one core for a while:
 * measured here, a 4-byte all-reduce between 2 ranks had a p90 of 310-330 us unbound and 75-120
 * us with each rank on its own core.
 *
 * 'slice' gives the host's ranks equal, disjoint shares of the CPUs ringrun itself may use (its
 * own affinity, e.g. a Slurm or container cpuset): with C CPUs and L ranks, local rank i gets
 * CPUs [i*floor(C/L), (i+1)*floor(C/L)), so a rank keeps several cores for its own threads (tfjs'
 * thread pools) where there are more cores than ranks. With more ranks than CPUs nothing is bound
 * (every slice would be empty), nor where taskset(1) is missing.
 */
export type BindTo = 'slice' | 'none';
export const BIND_TO_VALUES: readonly BindTo[] = ['slice', 'none'];

/** The CPUs this process may run on (its Cpus_allowed_list), or undefined if unknown. */
export function allowedCpus(status = '/proc/self/status'): number[] | undefined {
  let text: string;
  try {
    text = readFileSync(status, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(text);
  return m ? parseCpuList(m[1]) : undefined;
}

/** "0-3,8,10-11" -> [0,1,2,3,8,10,11]; undefined if malformed. */
export function parseCpuList(s: string): number[] | undefined {
  const cpus: number[] = [];
  for (const part of s.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) return undefined;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi - lo > 65536) return undefined;
    for (let c = lo; c <= hi; c++) cpus.push(c);
  }
  return cpus;
}

/** The CPUs of local rank `localRank` of `localSize`, or undefined when it is not bound. */
export function cpuSlice(cpus: readonly number[], localRank: number, localSize: number): number[] | undefined {
  const share = Math.floor(cpus.length / localSize);
  if (share < 1) return undefined;
  return cpus.slice(localRank * share, (localRank + 1) * share);
}

const TASKSET = ['/usr/bin/taskset', '/bin/taskset'];

/**
 * The argv that starts `command args` bound to its slice (through taskset), or the command as it
 * is when binding is off or impossible; `why` says why not, for --verbose.
 */
export function boundCommand(
  bindTo: BindTo,
  command: string,
  args: readonly string[],
  localRank: number,
  localSize: number,
  { cpus = allowedCpus(), path = process.env.PATH ?? '' }: { cpus?: number[]; path?: string } = {},
): { command: string; args: string[]; cpus?: number[]; why?: string } {
  const plain = { command, args: [...args] };
  if (bindTo === 'none') return { ...plain, why: '--bind-to none' };
  if (!cpus) return { ...plain, why: 'the CPUs this process may use are unknown' };
  const slice = cpuSlice(cpus, localRank, localSize);
  if (!slice) return { ...plain, why: `${localSize} ranks on this host but only ${cpus.length} CPU${cpus.length === 1 ? '' : 's'}` };
  const taskset = TASKSET.find((p) => existsSync(p));
  if (!taskset) return { ...plain, why: 'taskset (util-linux) is not installed' };
  // A command that cannot start must still fail as itself (spawn's ENOENT/EACCES, named by the
  // launcher), not as taskset's exit status.
  if (!runnable(command, path)) return { ...plain, why: `${command} is not an executable file` };
  return { command: taskset, args: ['-c', slice.join(','), command, ...args], cpus: slice };
}

function runnable(command: string, path: string): boolean {
  const candidates = command.includes('/') ? [command] : path.split(delimiter).filter(Boolean).map((d) => join(d, command));
  return candidates.some((c) => {
    try {
      accessSync(c, constants.X_OK);
      return statSync(c).isFile();
    } catch {
      return false;
    }
  });
}
