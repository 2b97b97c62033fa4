import { closeSync, openSync, readSync } from 'node:fs';

/**
 * How long the calling thread has waited for a CPU while it was runnable, in nanoseconds: the
 * second field of Linux's /proc/thread-self/schedstat ("on-CPU ns, run-queue ns, time slices").
 * A busy-polling thread is runnable all the time, so its run-queue time is exactly the time the
 * scheduler gave its core to someone else — on a machine with more runnable threads than cores,
 * often the very rank it polls for (see BusyPoller).
 *
 * The file is opened once, by the thread that constructs this (the path resolves to that thread),
 * and read at offset 0 (one pread, ~2 us). Where it is missing (not Linux, no /proc, a kernel
 * without schedstats), `read` returns undefined.
 */
export class RunQueueClock {
  private fd: number | undefined;
  private readonly buf = Buffer.alloc(96);

  constructor(path = '/proc/thread-self/schedstat') {
    try {
      this.fd = openSync(path, 'r');
      if (this.read() === undefined) this.close();
    } catch {
      this.fd = undefined;
    }
  }

  /** Run-queue nanoseconds so far, or undefined where unknown. */
  read(): number | undefined {
    if (this.fd === undefined) return undefined;
    try {
      const n = readSync(this.fd, this.buf, 0, this.buf.length, 0);
      const fields = this.buf.toString('latin1', 0, n).trim().split(' ');
      const v = Number(fields[1]);
      return fields.length >= 2 && Number.isFinite(v) ? v : undefined;
    } catch {
      return undefined;
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // already gone
    }
    this.fd = undefined;
  }
}
