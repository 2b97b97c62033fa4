import type { Readable } from 'node:stream';

/**
 * Rank output, forwarded line by line so that lines of different ranks never interleave mid-line.
 * Lines are split on the '\n' byte of the raw bytes (never inside a UTF-8 character, whose bytes
 * are all >= 0x80), so nothing is decoded on the way through.
 */

/** A whole line without its '\n' (complete), or the unterminated rest of one. */
export interface Line {
  bytes: Buffer;
  complete: boolean;
}

/** A line longer than this is passed on in pieces, so a rank that never prints '\n' cannot fill memory. */
export const MAX_LINE_BYTES = 64 * 1024;

export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxLineBytes = MAX_LINE_BYTES) {}

  /** The lines `chunk` completes; its unterminated tail is kept for the next chunk. */
  push(chunk: Buffer): Line[] {
    const lines: Line[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      lines.push({ bytes: this.take(chunk.subarray(start, nl)), complete: true });
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.pending.push(chunk.subarray(start));
      this.pendingBytes += chunk.length - start;
      if (this.pendingBytes >= this.maxLineBytes) lines.push({ bytes: this.take(), complete: false });
    }
    return lines;
  }

  /** The unterminated rest, once the stream has ended. */
  end(): Line[] {
    return this.pendingBytes > 0 ? [{ bytes: this.take(), complete: false }] : [];
  }

  private take(last?: Buffer): Buffer {
    const parts = last ? [...this.pending, last] : this.pending;
    const bytes = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    this.pending = [];
    this.pendingBytes = 0;
    return bytes;
  }
}

/**
 * One of ringrun's own streams (stdout or stderr), shared by every rank. When it pushes back, the
 * rank pipes feeding it pause until it drains. If it breaks (EPIPE: `ringrun ... | head`), output
 * is dropped rather than stopping the job.
 */
export class Output {
  private broken = false;
  private draining = false;
  private readonly paused = new Set<Readable>();
  private readonly onError = (): void => {
    this.broken = true;
    this.resumeAll();
  };

  constructor(private readonly stream: NodeJS.WritableStream) {
    stream.on('error', this.onError);
  }

  write(data: Buffer | string, source?: Readable): void {
    if (this.broken) return;
    if (this.stream.write(data) || !source) return;
    source.pause();
    this.paused.add(source);
    if (!this.draining) {
      this.draining = true;
      this.stream.once('drain', () => this.resumeAll());
    }
  }

  /** Resolves once everything written so far has been handed to the OS (or the stream broke). */
  flush(): Promise<void> {
    if (this.broken) return Promise.resolve();
    return new Promise((resolve) => this.stream.write('', () => resolve()));
  }

  dispose(): void {
    this.stream.off('error', this.onError);
    this.resumeAll();
  }

  private resumeAll(): void {
    this.draining = false;
    for (const s of this.paused) s.resume();
    this.paused.clear();
  }
}

/** Lines in, lines to forward out (possibly fewer, possibly later): see UncaughtFolder. */
export interface LineFilter {
  push(line: Buffer): Buffer[];
  /** The lines held back, to forward now (the stream ended, or nothing more came for a while). */
  end(): Buffer[];
  /** Whether lines are held back. */
  holding(): boolean;
}

/** Lines a filter holds back go on anyway once the source has been quiet this long. */
const FILTER_QUIET_MS = 500;

/**
 * Forwards `source` to `dest` line by line, each line prefixed with `prefix` when tagging.
 * `tap` sees every line (the rank keeps its last stderr lines); `filter`, if given, decides which
 * lines go on. Resolves when the source has ended
 * and its last line has been written. Every line goes out ending in '\n', even an unterminated
 * last one or a piece of an over-long one: otherwise the next rank's line would run into it.
 */
export function forwardLines(
  source: Readable,
  dest: Output,
  prefix: Buffer | undefined,
  tap?: (line: Buffer) => void,
  filter?: LineFilter,
): Promise<void> {
  const splitter = new LineSplitter();
  const newline = Buffer.from('\n');
  const emit = (lines: Line[], ended = false) => {
    const out: Buffer[] = [];
    for (const { bytes } of lines) {
      tap?.(bytes);
      out.push(...(filter ? filter.push(bytes) : [bytes]));
    }
    if (ended && filter) out.push(...filter.end());
    if (out.length === 0) return;
    const parts: Buffer[] = [];
    for (const bytes of out) {
      if (prefix) parts.push(prefix);
      parts.push(bytes, newline);
    }
    // One write per chunk: fewer syscalls, and a chunk's lines stay together.
    dest.write(Buffer.concat(parts), source);
  };
  let quiet: NodeJS.Timeout | undefined;
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(quiet);
      emit(splitter.end(), true);
      resolve();
    };
    source.on('data', (chunk: Buffer) => {
      clearTimeout(quiet);
      emit(splitter.push(chunk));
      if (filter?.holding()) quiet = setTimeout(() => emit([], true), FILTER_QUIET_MS).unref();
    });
    source.once('end', finish);
    source.once('close', finish);
    source.once('error', finish);
  });
}
