import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { summarizeUncaught, UncaughtFolder } from '../src/launcher/uncaught.js';
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

  it("UncaughtFolder: Node's report becomes one summary; anything else goes on unchanged and in order", () => {
    const folded: string[] = [];
    const f = new UncaughtFolder('/lib/dist', (s) => folded.push(s));
    const run = (lines: string[]) => [...lines.flatMap((l) => f.push(Buffer.from(l))), ...f.end()].map(String);
    const report = [
      'file:///home/me/train.js:4',
      '  await rr.allreduce(x);',
      '  ^',
      '',
      'TypeError: x is not a function',
      '    at step (file:///home/me/train.js:4:3)',
      '',
      'Node.js v20.20.2',
    ];
    expect(run(['before', ...report, 'after'])).toEqual(['before', 'after']);
    expect(folded).toEqual(['TypeError at /home/me/train.js:4:3: x is not a function']);
    // A line that only looks like a location, not followed by a caret: forwarded as it came.
    expect(run(['/tmp/data.csv:12', 'loaded', '  ^'])).toEqual(['/tmp/data.csv:12', 'loaded', '  ^']);
    expect(run(['/tmp/a:1', '/tmp/b:2', 'x'])).toEqual(['/tmp/a:1', '/tmp/b:2', 'x']);
    // A report cut short (the stream ended): its lines go on.
    expect(run(report.slice(0, 5))).toEqual(report.slice(0, 5));
    expect(f.holding()).toBe(false);
    expect(folded).toHaveLength(1);
  });

  it('ringrun says it in one line: rank, code and the user\'s file:line; --verbose shows the stderr tail instead', async () => {
    const fixture = join(root, 'test', 'fixtures', 'mismatch-rank.mjs');
    const r = await runNode([ringrunBin, '-np', '2', 'node', fixture], {}, 60_000);
    expect(r.code).toBe(1);
    const own = r.stderr.split('\n').filter((l) => l.startsWith('ringrun: '));
    const file = fixture.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    // One line per rank that reported the error, before the exit line; no stack, no Node report.
    for (const rank of [0, 1]) {
      const line = new RegExp(`^ringrun: rank ${rank}: RING_ERR_MISMATCH at ${file}:7:3: rank ${rank}: allreduce #\\d+ 'grad': ranks disagree on the element count \\(rank 0: 4; rank 1: 5\\)$`);
      expect(own.filter((l) => line.test(l)).length, r.stderr).toBeLessThanOrEqual(1);
    }
    expect(own.filter((l) => /^ringrun: rank \d: RING_ERR_MISMATCH at /.test(l)).length, r.stderr).toBeGreaterThanOrEqual(1);
    expect(own.some((l) => /^ringrun: rank \d \(pid \d+\) exited with code 1 \(ringrun --verbose shows its stack\)$/.test(l)), r.stderr).toBe(true);
    expect(r.stderr).not.toMatch(/stderr lines of rank/);
    expect(r.stderr).not.toMatch(/<stderr>: +at |<stderr>:Node\.js v|triggerUncaughtException/);
    // --verbose: Node's whole report, which starts with the user's frames, and the stderr tail.
    const v = await runNode([ringrunBin, '--verbose', '-np', '2', 'node', fixture], {}, 60_000);
    expect(v.code).toBe(1);
    expect(v.stderr).toMatch(/ringrun: last \d+ stderr lines of rank \d:\n {4}/);
    expect(v.stderr).toMatch(/<stderr>:RingMismatchError: .*\n\[1,\d\]<stderr>: {4}at async step \(file:\/\/.*mismatch-rank\.mjs:7:3\)/);
  }, 120_000);
});
