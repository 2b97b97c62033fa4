import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RingError } from '../src/index.js';
import { PEER_TEXT_MAX, peerText, peerValue } from '../src/peer-text.js';
import { encodeControl } from '../src/transport/wire.js';
import { ringWithImpostor } from './helpers/impostor.js';
import { withDeadline } from './helpers/reference.js';
import { ringrunBin, root, runNode } from './helpers/run.js';

/**
 * Issue 14, row 12: a message type field of 900 KB with newlines and ESC codes reached ringrun's
 * stderr intact, forging `[1,0]<stderr>:` lines. Every string a peer supplies now goes through
 * one helper (src/peer-text.ts) on its way into a log line or an error: control characters,
 * newlines, ESC and invisible formatting characters escaped, at most 200 characters, then
 * "…(N more)". Checked on the helper itself, on the errors of a live ring (a peer's name in a
 * mismatch, a peer's abort message), and end to end under ringrun.
 */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

describe('peerText, peerValue', () => {
  it('escapes control characters, ESC, newlines, line separators and bidirectional overrides; keeps the rest as it is', () => {
    expect(peerText('grad/w1 ok, ünïcödé 😀')).toBe('grad/w1 ok, ünïcödé 😀');
    expect(peerText('a\nb\rc\td')).toBe('a\\nb\\rc\\td');
    expect(peerText('\x1b[2K\x1b[31mred\x07')).toBe('\\x1b[2K\\x1b[31mred\\x07');
    expect(peerText('\x00\x7f\x9b')).toBe('\\x00\\x7f\\x9b');
    expect(peerText('x\u2028y\u2029z\u202eevil\u200b')).toBe('x\\u{2028}y\\u{2029}z\\u{202e}evil\\u{200b}');
    expect(peerText('lone \ud800 high, lone \udc00 low, pair \ud83d\ude00')).toBe('lone \\u{d800} high, lone \\u{dc00} low, pair 😀');
    // What it returns is safe: escaping again changes nothing.
    const once = peerText('\x1b]0;title\x07\n[1,0]<stderr>:forged');
    expect(peerText(once)).toBe(once);
    expect(once).not.toMatch(CONTROL);
  });

  it(`cuts at ${PEER_TEXT_MAX} characters of output with "…(N more)" counting what was left out`, () => {
    expect(peerText('y'.repeat(200))).toBe('y'.repeat(200));
    expect(peerText('y'.repeat(201))).toBe(`${'y'.repeat(200)}…(1 more)`);
    expect(peerText('y'.repeat(900_000))).toBe(`${'y'.repeat(200)}…(899800 more)`);
    // Escapes count as what they print: 50 ESCs are 200 characters.
    const esc = peerText('\x1b'.repeat(60));
    expect(esc).toBe(`${'\\x1b'.repeat(50)}…(10 more)`);
    expect(peerText('😀'.repeat(150))).toBe(`${'😀'.repeat(100)}…(100 more)`); // a pair is never split
    expect(peerText('abcdef', 3)).toBe('abc…(3 more)');
    const t = performance.now();
    for (let i = 0; i < 100; i++) peerText('x\n'.repeat(450_000));
    expect(performance.now() - t).toBeLessThan(2000); // the cut comes first: a 900 KB text costs what 200 characters do
  });

  it('peerValue shows any decoded value briefly: strings quoted and safe, numbers as themselves, the rest by kind and size', () => {
    expect(peerValue('desc')).toBe("'desc'");
    expect(peerValue('a\nb')).toBe("'a\\nb'");
    expect(peerValue(2 ** 40)).toBe('1099511627776');
    expect(peerValue(-0)).toBe('-0');
    expect(peerValue(NaN)).toBe('NaN');
    expect(peerValue(2n ** 62n)).toBe('4611686018427387904n');
    expect(peerValue(null)).toBe('null');
    expect(peerValue(undefined)).toBe('undefined');
    expect(peerValue(true)).toBe('true');
    expect(peerValue(new Array(200_000).fill(1))).toBe('[an array of 200000]');
    expect(peerValue({ a: 1, b: { c: 2 } })).toBe('{an object of 2 keys}');
    expect(peerValue(Buffer.alloc(12))).toBe('<12 bytes>');
  });
});

describe("a token holder's text in a live ring's errors", () => {
  it('a name of 1,000 characters with newlines and ESC in a descriptor: the mismatch error shows it escaped and cut, on both real ranks', async () => {
    const logs: string[] = [];
    const ring = await ringWithImpostor(logs);
    try {
      const name = `\n[1,0]<stderr>:forged\x1b[2K${'y'.repeat(1000)}`.slice(0, 1024);
      const ops = ring.groups.map((g) => g.allreduce(new Float32Array(64), { name: 'victim' }));
      ring.impostor.toRank0.send(
        encodeControl({ t: 'desc', seq: 1, origin: 2, d: { kind: 'allreduce', op: 'sum', dtype: 1, count: 64, name, root: -1, compression: 'none' }, p: Buffer.alloc(256) }),
      );
      const settled = await withDeadline(Promise.allSettled(ops), 20_000, 'mismatch');
      for (const [r, s] of settled.entries()) {
        const e = (s as PromiseRejectedResult).reason as RingError;
        expect(e.code, e.message).toBe('RING_ERR_MISMATCH');
        expect(e.message).toContain(`rank ${r}: allreduce #1 'victim': ranks disagree on the name (ranks 0,1: 'victim'; rank 2: '\\n[1,0]<stderr>:forged\\x1b[2Kyyy`);
        expect(e.message).toMatch(/…\(\d+ more\)'\)$/);
        expect(e.message).not.toMatch(CONTROL);
        expect(e.message.length).toBeLessThan(400);
      }
    } finally {
      await ring.close();
    }
  });

  it("an abort whose message is 100,000 characters of escape sequences: the rank's error carries it safe and short", async () => {
    const logs: string[] = [];
    const ring = await ringWithImpostor(logs, { chunkBytes: 1 << 20 });
    try {
      const ops = ring.groups.map((g) => g.barrier({ name: 'victim' }));
      ring.impostor.toRank0.send(encodeControl({ t: 'abort', origin: 2, error: { code: 'RING_ERR_TIMEOUT', message: `\r\x1b[2K[1,1]<stdout>:${'\x1b[5m\n'.repeat(20_000)}` } }));
      const settled = await withDeadline(Promise.allSettled(ops), 20_000, 'abort');
      for (const s of settled) {
        const e = (s as PromiseRejectedResult).reason as RingError;
        expect(e.code, e.message).toBe('RING_ERR_TIMEOUT');
        expect(e.message).toMatch(/aborted because rank \d failed: .*\\r\\x1b\[2K\[1,1\]<stdout>:\\x1b\[5m\\n/);
        expect(e.message).not.toMatch(CONTROL);
        expect(e.message.length).toBeLessThan(2200);
      }
      expect(logs.join('\n')).not.toMatch(CONTROL);
    } finally {
      await ring.close();
    }
  });
});

describe('under ringrun', () => {
  it("a 180 KB message type with newlines, CR and ESC from rank 1 (under the 256 KiB control-message limit): rank 0's warning, its uncaught error and ringrun's summary show it escaped and cut; no forged line, no ESC, no CR", async () => {
    const fixture = join(root, 'test', 'fixtures', 'hostile-text-rank.mjs');
    const r = await runNode([ringrunBin, '-np', '2', 'node', fixture], {}, 90_000);
    expect(r.code, r.stderr.slice(0, 3000)).toBe(1);
    const lines = r.stderr.split('\n');
    // Before: 3.7 MB of stderr in 186,511 lines with 186,505 ESC bytes.
    expect(r.stderr.length).toBeLessThan(20_000);
    expect(r.stderr).not.toMatch(/[\x1b\r]/);
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThan(1000);
    // Every line is ringrun's own or a rank's, prefixed once; the forged prefixes appear only escaped, mid-line.
    for (const l of lines.filter(Boolean)) {
      expect(l, l).toMatch(/^(ringrun: |\[1,[01]\]<std(err|out)>:)/);
      expect(l, l).not.toMatch(/^(\[1,\d\]<std(err|out)>:)+FORGED|^(\[1,\d\]<std(err|out)>:){2}/);
    }
    const summary = lines.find((l) => l.startsWith('ringrun: rank 0: RING_ERR_PROTOCOL'));
    expect(summary, r.stderr.slice(0, 3000)).toMatch(
      /unexpected control message 'evil\\n\[1,0\]<stderr>:FORGED line from a peer\\r\\x1b\[2K\\x1b\[31m\[1,0\]<stdout>:FORGED in red.*…\(\d+ more\)' from rank 1/,
    );
    expect(lines.filter((l) => /<stderr>:ringreduce: warning: rank 0: protocol error: rank 1 \(left neighbour\) broke the protocol: unexpected control message 'evil\\n/.test(l))).toHaveLength(1);
  }, 120_000);
});
