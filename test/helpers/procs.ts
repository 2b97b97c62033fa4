import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './run.js';

/**
 * Real processes for the fault tests: a started command whose stdout lines are JSON events (from
 * test/fixtures/fault-rank.mjs, directly or tagged `[1,r]<stdout>:` by ringrun), with waits that
 * have deadlines, and a teardown that kills everything it started — its process group and every
 * rank that reported a pid — whatever the test did.
 */
export const faultRank = join(root, 'test', 'fixtures', 'fault-rank.mjs');
export const ringrun = join(root, 'bin', 'ringrun.js');

export interface RankEvent {
  ev: 'ready' | 'done' | 'wrong' | 'error' | 'finished' | 'sigterm';
  rank: number;
  pid?: number;
  store?: string;
  op?: number;
  ms?: number;
  code?: string;
  name?: string;
  message?: string;
  details?: { rank?: number; ranks?: number[]; op?: string; seq?: number; field?: string };
  at?: number;
}

/** True while `pid` runs (a zombie, dead but not yet reaped by its parent, does not count). */
export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return !/^[ZXx]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
};

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Every Proc not yet killed, for an afterEach(killStarted) safety net behind each test's finally. */
const started = new Set<Proc>();

export class Proc {
  readonly child: ChildProcess;
  readonly events: RankEvent[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;
  private listeners = new Set<() => void>();
  /** Every fixture process started under this one appends its pid here (PID_FILE). */
  private readonly dir = mkdtempSync(join(tmpdir(), 'rr-faults-'));
  readonly pidFile = join(this.dir, 'pids');

  constructor(command: string, args: string[], env: Record<string, string | undefined>, readonly label = command) {
    this.child = spawn(command, args, {
      env: { ...process.env, PID_FILE: this.pidFile, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    started.add(this);
    let partial = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdout += d;
      partial += d;
      let i;
      while ((i = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, i);
        partial = partial.slice(i + 1);
        const json = /^(?:\[1,\d+\]<stdout>:)?(\{.*\})\s*$/.exec(line)?.[1];
        if (json) this.events.push(JSON.parse(json) as RankEvent);
        for (const l of this.listeners) l();
      }
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d;
      for (const l of this.listeners) l();
    });
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal, at: Date.now() };
        resolve(this.exit);
        for (const l of this.listeners) l();
      }),
    );
  }

  /** Resolves once `pred()` holds; rejects (with what was seen) after `ms`. */
  waitFor<T>(pred: () => T | undefined | false, ms: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const v = pred();
        if (v) {
          cleanup();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.label}: ${what}: not within ${ms} ms\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`));
      }, ms);
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  of(ev: RankEvent['ev']): RankEvent[] {
    return this.events.filter((e) => e.ev === ev);
  }

  /** This process and every fixture process started under it (from PID_FILE). */
  pids(): number[] {
    let fromFile: number[] = [];
    try {
      fromFile = readFileSync(this.pidFile, 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      /* none started yet */
    }
    return [...new Set([this.child.pid!, ...fromFile])];
  }

  /** SIGCONT + SIGKILL to this process's group and to every process it started. Idempotent. */
  kill(): void {
    started.delete(this);
    const targets = [-this.child.pid!, ...this.pids()];
    rmSync(this.dir, { recursive: true, force: true });
    for (const target of targets) {
      for (const sig of ['SIGCONT', 'SIGKILL'] as const) {
        try {
          process.kill(target, sig);
        } catch {
          /* gone */
        }
      }
    }
  }
}

/** Resolves with `pred()` once it is truthy (checked every 20 ms); rejects after `ms` with `what`. */
export function poll<T>(pred: () => T | undefined | false, ms: number, what: () => string): Promise<T> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    const tick = () => {
      const v = pred();
      if (v) return resolve(v);
      if (Date.now() > deadline) return reject(new Error(`not within ${ms} ms: ${what()}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

/** Kills every Proc started and not killed yet (for afterEach). */
export function killStarted(): void {
  killAll([...started]);
}

/** Kills every Proc in `procs` (for finally blocks). */
export function killAll(procs: Proc[]): void {
  for (const p of procs) p.kill();
}

/** Waits until none of `pids` is alive (zombies of our own children count as gone once reaped). */
export async function gone(pids: number[], ms: number): Promise<number[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() >= deadline) return left;
    await sleep(50);
  }
}

/** A port that is free now (bound then released), for MASTER_PORT. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
