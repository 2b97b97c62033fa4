import { expect, it } from 'vitest';
import { allowedCpus } from '../src/launcher/bind.js';
import { ringrunBin, runNode } from './helpers/run.js';

it('more ranks than CPUs on a host: one warning, like mpirun; the job still runs', async () => {
  const cpus = allowedCpus()?.length ?? 0;
  const over = await runNode([ringrunBin, '-np', String(cpus + 1), 'node', '-e', '0'], {}, 60_000);
  expect(over.code, over.stderr).toBe(0);
  const warnings = over.stderr.split('\n').filter((l) => l.includes('ranks share cores'));
  expect(warnings).toEqual([
    `ringrun: warning: ${cpus + 1} ranks on this host, which has ${cpus} CPU${cpus === 1 ? '' : 's'} for them: ranks share cores (not bound, no busy polling), so collectives wait for ranks to be scheduled; -np ${cpus} or fewer runs faster`,
  ]);
  const fits = await runNode([ringrunBin, '-np', '1', 'node', '-e', '0'], {}, 30_000);
  expect(fits.stderr).not.toContain('share cores');
}, 120_000);
