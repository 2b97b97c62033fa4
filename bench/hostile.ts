#!/usr/bin/env -S npx tsx
/**
 * Figures for rows 7, 8, 10 and 12 of issue 14 (the attacks of a job-token holder), measured the
 * way the audit attacked: `npx tsx bench/hostile.ts [row7|row8|row10|row12|all]`. Each row runs
 * in a child process of its own (an attack that crashes a rank crashes that child, which is the
 * figure), on 127.0.0.1, and prints one line of JSON.
 *
 *   row7   a token holder (rank 2 of 3) sends rank 0 an allgather descriptor with count 2^40
 *   row8   fp16/bf16 all-reduce of 2 ranks, one Inf (or NaN) among 1,001 values of 1e5..1e6
 *   row10  a token holder floods rank 0 with frames of an operation rank 0 has not started:
 *          bytes sent, seconds, rank 0's process RSS before and at its peak, how it ended (the
 *          process holds ranks 0 and 1 and the impostor, which queues at most 4 MiB itself);
 *          row10-running: the same while rank 0 runs an all-reduce that waits for rank 2's data
 *   row12  ringrun -np 2, rank 1 sends rank 0 a message whose type field is 900 KB of text with
 *          newlines and ESC codes: ringrun's stderr size, its longest line, ESC bytes, forged lines
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '..');
const which = process.argv[2] ?? 'all';
const child = process.argv[3] === 'child';

async function runChild(row: string, env: Record<string, string> = {}): Promise<void> {
  await new Promise<void>((resolve) => {
    const p = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), row, 'child'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: root,
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code, signal) => {
      const line = out.trim().split('\n').filter((l) => l.startsWith('{')).at(-1);
      if (line && code === 0) console.log(line);
      else {
        const lastErr = err.trim().split('\n').filter((l) => /Error|error/.test(l)).slice(0, 2).join(' | ').slice(0, 300);
        console.log(JSON.stringify({ row, crashed: true, code, signal, stderr: lastErr, partial: line ? JSON.parse(line) : undefined }));
      }
      resolve();
    });
  });
}

const mib = (b: number) => Math.round(b / 2 ** 20);

async function row7(): Promise<void> {
  const { ringWithImpostor } = await import('../test/helpers/impostor.js');
  const { mp } = await import('../test/helpers/hostile.js');
  const logs: string[] = [];
  const ring = await ringWithImpostor(logs);
  const ops = ring.groups.map((g) => g.allgather(new Float32Array(4), { name: 'victim' }));
  const desc = { kind: 'allgather', op: '', dtype: 1, count: 2 ** 40, name: 'victim', root: -1, compression: 'none' };
  ring.impostor.toRank0.send(Buffer.concat([Buffer.from([0]), mp({ t: 'desc', seq: 1, origin: 2, d: desc })]));
  const settled = await Promise.allSettled(ops);
  console.log(
    JSON.stringify({
      row: 'row7',
      ranks: settled.map((s) => (s.status === 'fulfilled' ? 'resolved' : `${s.reason.code}: ${String(s.reason.message).slice(0, 160)}`)),
    }),
  );
  await ring.close();
}

async function row8(): Promise<void> {
  const { createLocalGroups } = await import('../src/index.js');
  const { kernels } = await import('../src/kernels/index.js');
  const out: Record<string, unknown> = { row: 'row8', kernels: kernels.backend };
  for (const compression of ['fp16', 'bf16'] as const) {
    for (const bad of [Infinity, NaN]) {
      // 8,008 elements (past the 16 KiB of the eager path) in chunks of 1,001 (chunkBytes 2,002):
      // values 1e5..1e6 (fp16 needs a scale for them), one non-finite at element 500 on rank 0.
      const n = 8008;
      const gs = await createLocalGroups(2, { chunkBytes: 2002 });
      const ins = gs.map((g) => Float32Array.from({ length: n }, (_, i) => 1e5 + 110 * i + g.rank));
      ins[0][500] = bad;
      const outs = await Promise.all(gs.map((g, r) => g.allreduce(ins[r], { compression })));
      let nonFinite = 0;
      let worst = 0;
      for (let i = 0; i < n; i++) {
        if (i === 500) continue;
        const exact = ins[0][i] + ins[1][i];
        if (!Number.isFinite(outs[0][i])) nonFinite++;
        else worst = Math.max(worst, Math.abs(outs[0][i] - exact) / Math.abs(exact));
      }
      out[`${compression} ${bad}`] = { otherNonFinite: nonFinite, worstRelErr: Number(worst.toExponential(2)), at500: String(outs[0][500]) };
      await Promise.all(gs.map((g) => g.shutdown()));
    }
  }
  console.log(JSON.stringify(out));
}

async function row10(): Promise<void> {
  const { ringWithImpostor } = await import('../test/helpers/impostor.js');
  const { encodeControl, encodeData } = await import('../src/transport/wire.js');
  const logs: string[] = [];
  const chunkBytes = 1 << 20;
  const ring = await ringWithImpostor(logs, { chunkBytes, timeoutMs: 60_000 });
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  const ws = ring.impostor.toRank0;
  // row10: rank 0 is idle (it may stop reading: backpressure); row10-running: it runs an
  // all-reduce that waits for rank 2's data, which never comes (it must keep reading).
  const running = process.env.HOSTILE_RUNNING === '1';
  const ops = running ? ring.groups.map((g) => g.allreduce(new Float32Array(1 << 16), { name: 'victim' }).catch((e) => e)) : [];
  // Operation #5 has not started anywhere: its descriptor (so its frames are not "data before its
  // descriptor"), then frames, as fast as the socket takes them (at most 16 MiB queued here).
  const desc = { kind: 'allreduce', op: 'sum', dtype: 1, count: 1 << 30, name: 'flood', root: -1, compression: 'none' };
  ws.send(encodeControl({ t: 'desc', seq: 5, origin: 2, d: desc }));
  const payload = Buffer.alloc(chunkBytes, 1);
  const t0 = Date.now();
  let sent = 0;
  let chunk = 0;
  const LIMIT = 3.3e9;
  const SECONDS = 9;
  let ended = 'still open';
  const closed = new Promise<void>((r) => ws.once('close', () => r()));
  while (sent < LIMIT && Date.now() - t0 < SECONDS * 1000) {
    if (ws.readyState !== ws.OPEN) {
      ended = 'rank 0 closed the link';
      break;
    }
    if (ws.bufferedAmount > 4 << 20) {
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    ws.send(encodeData({ seq: 5, step: 0, chunk: chunk++, codec: 0, scale: 1 }, payload));
    sent += chunkBytes;
  }
  const seconds = (Date.now() - t0) / 1000;
  await Promise.race([closed, new Promise((r) => setTimeout(r, 500))]);
  if (ws.readyState !== ws.OPEN && ended === 'still open') ended = 'rank 0 closed the link';
  clearInterval(sampler);
  // What stays once garbage (ws's message buffers, already copied) is collected.
  (globalThis as { gc?: () => void }).gc?.();
  const rssAfterGc = process.memoryUsage().rss;
  const err = logs.find((l) => /protocol error/.test(l));
  console.log(
    JSON.stringify({
      row: running ? 'row10-running' : 'row10',
      sentMiB: mib(sent),
      seconds,
      queuedAtImpostorMiB: mib(ws.bufferedAmount),
      rssBeforeMiB: mib(rss0),
      rssPeakMiB: mib(peak),
      rssAfterGcMiB: mib(rssAfterGc),
      ended,
      rank0: err?.slice(0, 200),
    }),
  );
  ws.terminate();
  await Promise.all(ops);
  await ring.close();
}

async function row12(): Promise<void> {
  const fixture = join(root, 'test', 'fixtures', 'hostile-text-rank.mjs');
  const p = spawn(process.execPath, [join(root, 'bin', 'ringrun.js'), '-np', '2', 'node', fixture], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = Buffer.alloc(0);
  let stdout = '';
  p.stderr.on('data', (d: Buffer) => (stderr = Buffer.concat([stderr, d])));
  p.stdout.on('data', (d) => (stdout += d));
  const code = await new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  const text = stderr.toString('utf8');
  const lines = text.split('\n');
  console.log(
    JSON.stringify({
      row: 'row12',
      ringrunExit: code,
      stderrBytes: stderr.length,
      longestLine: lines.reduce((m, l) => Math.max(m, l.length), 0),
      lines: lines.length,
      escBytes: stderr.filter((b) => b === 0x1b).length,
      crBytes: stderr.filter((b) => b === 0x0d).length,
      forgedLines: lines.filter((l) => /^(\[1,\d\]<std(err|out)>:)?[^\n]{0,40}FORGED/.test(l) && !/\\n|\\r|\\x1b|\\u001b/.test(l.slice(0, l.indexOf('FORGED')))).length,
      ranks: stdout.trim().split('\n').slice(-2),
    }),
  );
}

const ROWS: Record<string, () => Promise<void>> = { row7, row8, row10, 'row10-running': row10, row12 };
if (child) {
  await ROWS[which]();
  process.exit(0);
} else {
  for (const row of which === 'all' ? Object.keys(ROWS) : [which]) await runChild(row, row === 'row10-running' ? { HOSTILE_RUNNING: '1' } : {});
}
