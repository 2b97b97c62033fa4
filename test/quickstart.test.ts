import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ringrunBin, root, runNode } from './helpers/run.js';

const example = join(root, 'examples', 'quickstart.js');

it("examples/quickstart.js trains under ringrun -np 2: every rank ends with the same model, close to the truth; tfjs' banner once", async () => {
  const r = await runNode([ringrunBin, '-np', '2', 'node', example], {}, 120_000);
  expect(r.code, r.stderr).toBe(0);
  const finals = r.stdout.split('\n').filter((l) => l.includes('final loss'));
  expect(finals).toHaveLength(2);
  const parsed = finals.map((l) => /rank (\d)\/2: final loss ([\d.]+), f\(0\.5\) = (-?[\d.]+)/.exec(l)!.slice(1));
  // Same weights on both ranks: the same loss and prediction, to the printed digit.
  expect(parsed[0].slice(1)).toEqual(parsed[1].slice(1));
  expect(Math.abs(Number(parsed[0][2]) - 0.5)).toBeLessThan(0.1);
  // Epoch lines come from rank 0's CustomCallback only, ten of them.
  expect(r.stdout.split('\n').filter((l) => /<stdout>:epoch \d+: loss/.test(l)).every((l) => l.startsWith('[1,0]'))).toBe(true);
  expect(r.stdout.split('\n').filter((l) => /<stdout>:epoch \d+: loss/.test(l))).toHaveLength(10);
  expect((r.stderr.match(/Hi, looks like you are running TensorFlow\.js in Node\.js/g) ?? []).length).toBeLessThanOrEqual(1);
}, 150_000);

it("the README's training section is examples/quickstart.js, verbatim", () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  expect(readme).toContain('```js\n' + readFileSync(example, 'utf8').trimEnd() + '\n```');
});
