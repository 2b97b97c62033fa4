import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';

it('stall detector: each rank names the tensors that wait and the ranks that never submitted them', async () => {
  const fixture = join(root, 'test', 'fixtures', 'tfjs-stall.mjs');
  const r = await runNode([ringrunBin, '-np', '2', '--timeout', '12', '--grace', '1', 'node', fixture], { RINGREDUCE_STALL_WARNING: '0.5' }, 40_000);
  // ringrun's --timeout ends the stuck job; 12 s leaves room for loading tfjs on a loaded 2-core machine.
  expect(r.code).toBe(124);
  expect(r.stderr).toMatch(/\[1,0\]<stderr>:ringreduce: warning: rank 0: stall: 1 tensor\(s\) submitted \d+ s ago are still waiting \(opt0\/a\); as of negotiation round \d+, rank\(s\) 1 had not submitted them/);
  expect(r.stderr).toMatch(/\[1,1\]<stderr>:ringreduce: warning: rank 1: stall: .*\(opt0\/b\); .* rank\(s\) 0 had not submitted them/);
  expect(r.stdout).not.toContain('UNEXPECTED');
});
