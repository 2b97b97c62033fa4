import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { workerExecArgv } from '../src/engine/client.js';
import { killStarted, Proc, ringrun } from './helpers/procs.js';
import { root } from './helpers/run.js';

/**
 * Issue 14: what a rank's process hands on. The comm thread (a worker_thread) must not inherit
 * the options that say what the main script is (`node --input-type=module -e '...'`).
 */

afterEach(killStarted);

describe('the comm thread does not inherit the main script\'s options', () => {
  it('workerExecArgv drops -e/-p/--eval/--print/--input-type (with their values), keeps the rest', () => {
    expect(workerExecArgv(['--input-type=module', '-e', 'code'])).toEqual([]);
    expect(workerExecArgv(['--input-type', 'module', '--eval', 'code', '--max-old-space-size=512'])).toEqual(['--max-old-space-size=512']);
    expect(workerExecArgv(['-pe', 'x', '--import', 'tsx', '--eval=code', '-p', 'y'])).toEqual(['--import', 'tsx']);
    expect(workerExecArgv(['--conditions=dev', '-i', '--check'])).toEqual(['--conditions=dev']);
  });

  it('ringrun -np 2 node --input-type=module -e \'...\': init() and the comm thread work', async () => {
    const code = `
      import * as rr from ${JSON.stringify(join(root, 'dist', 'index.js'))};
      import { engine } from ${JSON.stringify(join(root, 'dist', 'api.js'))};
      await rr.init();
      const [z] = await engine('t').reduce([{ name: 'g', shape: [1], data: new Float32Array([rr.rank() + 1]) }], { op: 'sum', compression: 'none', prescale: 1, postscale: 1 });
      console.log(JSON.stringify({ ev: 'done', rank: rr.rank(), ok: z[0] === 3 }));
      await rr.shutdown();`;
    const job = new Proc(process.execPath, [ringrun, '-np', '2', process.execPath, '--input-type=module', '-e', code], {}, 'ringrun -e');
    try {
      const exit = await job.waitFor(() => job.exit, 60_000, 'the job ends');
      expect(exit.code, job.stderr).toBe(0);
      expect(job.of('done').map((e) => (e as unknown as { ok: boolean }).ok)).toEqual([true, true]);
    } finally {
      job.kill();
    }
  });
});
