import { fileURLToPath } from 'node:url';
import type { LineFilter } from './output.js';

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

/** A block that does not end in Node's version line within this many lines is not Node's report. */
const MAX_BLOCK_LINES = 400;

/**
 * Replaces Node's report of an uncaught error on a rank's stderr with one line from ringrun. Node
 * prints, and then exits:
 *
 *   file:///home/me/train.js:4          <- where it was thrown (or node:internal/...:123)
 *     await rr.allreduce(x);            <- that source line
 *     ^                                 <- a caret under it
 *                                       <- (blank)
 *   RingMismatchError: ...              <- the error, its stack and properties
 *       at ...
 *   Node.js v20.20.2
 *
 * The first three lines are recognised together (a location alone, then a caret line), held, and
 * the block up to the version line is handed to `onFolded` as a summary (summarizeUncaught)
 * instead of being forwarded. Anything that turns out not to be such a block is forwarded as it
 * came, in order, and so are held lines when the rank goes quiet (forwardLines).
 */
export class UncaughtFolder implements LineFilter {
  private held: Buffer[] = [];

  constructor(
    private readonly libraryRoot: string,
    private readonly onFolded: (summary: string) => void,
  ) {}

  push(line: Buffer): Buffer[] {
    const text = line.length <= 4096 ? line.toString('utf8') : '';
    const n = this.held.length;
    const fits =
      n === 0 ? /^(?:node:internal\/\S+|file:\/\/\S+|\/\S*):\d+$/.test(text)
      : n === 1 ? true
      : n === 2 ? /^\s*\^+\s*$/.test(text)
      : n < MAX_BLOCK_LINES;
    if (!fits) return [...this.release(), ...(n === 0 ? [line] : this.push(line))];
    this.held.push(line);
    if (n >= 3 && /^Node\.js v\d+\.\d+\.\d+$/.test(text)) {
      const summary = summarizeUncaught(this.held.map((l) => l.toString('utf8')), this.libraryRoot);
      if (summary) {
        this.held = [];
        this.onFolded(summary);
        return [];
      }
      return this.release();
    }
    return [];
  }

  end(): Buffer[] {
    return this.release();
  }

  holding(): boolean {
    return this.held.length > 0;
  }

  private release(): Buffer[] {
    const out = this.held;
    this.held = [];
    return out;
  }
}
