import { spawn } from 'node:child_process';
import { join } from 'node:path';

export const root = join(import.meta.dirname, '..', '..');
export const ringrunBin = join(root, 'bin', 'ringrun.js');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
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
