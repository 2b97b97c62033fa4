import { readdirSync, readFileSync } from 'node:fs';

/**
 * File descriptors: what a process that opens many sockets or files runs out of. Node reports
 * running out as EMFILE (this process's limit, `ulimit -n`) or ENFILE (the system's). On accept,
 * libuv hides it: it takes the waiting connections and closes them at once, so a server that ran
 * out sees nothing and its clients see resets. So where a rank waits in vain for a connection, it
 * also asks whether it is out of descriptors (fdShortage), and says so, instead of blaming a peer.
 */

/** True for an error that means no file descriptor was left. */
export function isFdExhaustion(e: unknown): boolean {
  const code = (e as { code?: unknown } | undefined)?.code;
  return code === 'EMFILE' || code === 'ENFILE';
}

/** This process's limit of open files (Linux: /proc/self/limits), read once while descriptors are to be had. */
const LIMIT: number | undefined = (() => {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
})();

/**
 * Why this process cannot open a file descriptor, if that is so (open ones within a few of the
 * limit, or not even /proc/self/fd could be opened); undefined if it can, or where unknown.
 */
export function fdShortage(): string | undefined {
  let open: number;
  try {
    open = readdirSync('/proc/self/fd').length - 1; // the directory being read is one of them
  } catch (e) {
    return isFdExhaustion(e) ? `this process is out of file descriptors (${(e as { code: string }).code}${LIMIT ? `, limit ${LIMIT}` : ''}; raise it with ulimit -n)` : undefined;
  }
  if (LIMIT === undefined || open < LIMIT - 2) return undefined;
  return `this process is out of file descriptors (${open} of ${LIMIT} open; raise the limit with ulimit -n)`;
}

/** An error's message, made plain when it means no file descriptor was left. */
export function describeErrno(e: Error & { code?: unknown }): string {
  if (!isFdExhaustion(e)) return e.message;
  if (e.code === 'ENFILE') return `${e.message}: the system is out of file descriptors (ENFILE)`;
  return `${e.message}: ${fdShortage() ?? `this process is out of file descriptors (EMFILE${LIMIT ? `, limit ${LIMIT}` : ''}; raise it with ulimit -n)`}`;
}
