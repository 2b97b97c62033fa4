import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { summarizeUncaught } from '../src/launcher/uncaught.js';
import { ringrunBin, root, runNode } from './helpers/run.js';

describe('a rank that dies of an uncaught error', () => {
  it('summarizeUncaught: code (or name), the first frame of the user\'s code, the message', () => {
    const lib = '/opt/app/node_modules/ringreduce/dist';
    const node = [
      'file:///opt/app/node_modules/ringreduce/dist/collectives/descriptor.js:113',
      '        return new RingMismatchError(...)',
      '               ^',
      '',
      "RingMismatchError: rank 0: allreduce #1 'grad': ranks disagree on the element count (rank 0: 4; rank 1: 5)",
      '    at async step (file:///home/me/train.js:4:3)',
      '    at async file:///home/me/train.js:6:1',
      '    --- in ringreduce:',
      '    at mismatchError (file:///opt/app/node_modules/ringreduce/dist/collectives/descriptor.js:113:16) {',
      "  code: 'RING_ERR_MISMATCH',",
      "  details: { rank: 0, ranks: [ 1 ], op: 'allreduce', seq: 1, field: 'count' }",
      '}',
    ];
    expect(summarizeUncaught(node, lib)).toBe(
      "RING_ERR_MISMATCH at /home/me/train.js:4:3: rank 0: allreduce #1 'grad': ranks disagree on the element count (rank 0: 4; rank 1: 5)",
    );
    expect(summarizeUncaught(['TypeError: x is not a function', '    at main (/home/me/a.js:2:5)', '    at node:internal/main:1:1'], lib)).toBe(
      'TypeError at /home/me/a.js:2:5: x is not a function',
    );
    expect(summarizeUncaught(['Error [ERR_X]: bad', '    at node:internal/x:1:1'], lib)).toBe('ERR_X: bad');
    expect(summarizeUncaught(['rank 1: failing on purpose with code 3'], lib)).toBeUndefined();
  });

  it('ringrun says it in one line: rank, code and the user\'s file:line; --verbose shows the stderr tail instead', async () => {
    const fixture = join(root, 'test', 'fixtures', 'mismatch-rank.mjs');
    const r = await runNode([ringrunBin, '-np', '2', 'node', fixture], {}, 60_000);
    expect(r.code).toBe(1);
    const own = r.stderr.split('\n').filter((l) => l.startsWith('ringrun: '));
    expect(own[1]).toMatch(new RegExp(`^ringrun: rank \\d: RING_ERR_MISMATCH at ${fixture.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:7:3: rank \\d: allreduce #\\d+ 'grad': ranks disagree on the element count \\(rank 0: 4; rank 1: 5\\)$`));
    expect(r.stderr).not.toMatch(/stderr lines of rank/);
    // The rank's own stack starts with the user's frames.
    expect(r.stderr).toMatch(/<stderr>:RingMismatchError: .*\n\[1,\d\]<stderr>: {4}at async step \(file:\/\/.*mismatch-rank\.mjs:7:3\)/);
    const v = await runNode([ringrunBin, '--verbose', '-np', '2', 'node', fixture], {}, 60_000);
    expect(v.code).toBe(1);
    expect(v.stderr).toMatch(/ringrun: last \d+ stderr lines of rank \d:\n {4}/);
  }, 120_000);
});
