import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { root } from './helpers/run.js';

/** Ranks started by Open MPI's mpirun (no ringrun): rank/size from OMPI_COMM_WORLD_*, store at MASTER_ADDR:MASTER_PORT. */
const haveMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0;

it.skipIf(!haveMpirun)('mpirun -np 3 node ring-worker.mjs: exact results on every rank (skipped without openmpi-bin)', () => {
  const port = String(29600 + (process.pid % 300));
  const r = spawnSync(
    'mpirun',
    ['--allow-run-as-root', '--oversubscribe', '-np', '3', '-x', 'MASTER_ADDR=127.0.0.1', '-x', `MASTER_PORT=${port}`, '-x', 'MODE=check', '-x', 'RINGREDUCE_TOKEN=mpi-test',
      process.execPath, join(root, 'test', 'fixtures', 'ring-worker.mjs')],
    { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' },
  );
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  for (let k = 0; k < 3; k++) expect(r.stdout).toContain(`rank ${k}: OK size=3 local=${k}/3`);
});
