import { fileURLToPath } from 'node:url';

/**
 * One line for a rank that died of an uncaught error: its name or code, its message and the first
 * frame of the user's own code — read from what Node printed on the rank's stderr, e.g.
 *
 *   RingMismatchError: rank 0: allreduce #1 'grad': ranks disagree on the element count (...)
 *       at async step (file:///home/me/train.js:4:3)
 *       ...
 *     code: 'RING_ERR_MISMATCH',
 *
 * gives "RING_ERR_MISMATCH at /home/me/train.js:4:3: rank 0: allreduce #1 'grad': ...". Frames
 * of Node itself and of ringreduce (`libraryRoot`) are not the user's. Undefined when the lines
 * hold no such error.
 */
export function summarizeUncaught(lines: readonly string[], libraryRoot: string): string | undefined {
  const at = lines.findIndex((l) => /^([A-Z]\w*)?(Error|Exception)( \[\w+\])?: /.test(l));
  if (at < 0) return undefined;
  const m = /^([A-Z]\w*)(?: \[(\w+)\])?: (.*)$/.exec(lines[at])!;
  const code = lines.slice(at).map((l) => /^\s+code: '([A-Z][A-Z0-9_]+)'/.exec(l)?.[1]).find(Boolean) ?? m[2];
  const own = (where: string) => where.startsWith('node:') || where.includes(libraryRoot) || where.includes('/node_modules/ringreduce/');
  let frame: string | undefined;
  for (const l of lines.slice(at + 1)) {
    const f = /^\s+at (?:.* \()?((?:file:\/\/|\/|[A-Za-z]:\\)[^()]*?:\d+:\d+)\)?$/.exec(l)?.[1];
    if (!f) continue;
    const path = f.startsWith('file://') ? fileURLToPath(f.replace(/:\d+:\d+$/, '')) + f.slice(f.search(/:\d+:\d+$/)) : f;
    if (!own(path)) {
      frame = path;
      break;
    }
  }
  return `${code ?? m[1]}${frame ? ` at ${frame}` : ''}: ${m[3]}`;
}
