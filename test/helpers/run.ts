import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export const root = join(import.meta.dirname, '..', '..');
export const ringrunBin = join(root, 'bin', 'ringrun.js');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `cmd args...` until its output closes and collects that output; kills it (and fails, with the
 * output so far) if `deadlineMs` passes. While it runs it is in `started`, for an afterEach or
 * afterAll that kills whatever a failed test left running.
 */
export function runToEnd(
  cmd: string,
  args: string[],
  o: { env?: NodeJS.ProcessEnv; cwd?: string; deadlineMs: number; started: Set<ChildProcess> },
): Promise<Run> {
  const child = spawn(cmd, args, { env: o.env, cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  o.started.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${o.deadlineMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, o.deadlineMs);
    child.once('close', (code, signal) => {
      clearTimeout(t);
      o.started.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs `node args...` with a deadline; kills it (and fails) if the deadline passes. */
export function runNode(args: string[], env: Record<string, string>, deadlineMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`node ${args.join(' ')} did not finish within ${deadlineMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, deadlineMs);
    p.on('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
