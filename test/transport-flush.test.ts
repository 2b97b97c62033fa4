import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { root } from './helpers/run.js';

/**
 * A send leaves by itself: a rank that sends and then keeps running in a chain of awaits that
 * resolve at once (data that arrived already, a compute, the next send) never returns to the
 * event loop, and its messages must not wait for it to. The sender (test/fixtures/flush-rank.mjs)
 * spins on `await Promise.resolve()` until the receiver, in another worker thread, says through a
 * SharedArrayBuffer that its side resolved; the spin is capped at CAP_MS so that a message stuck
 * on the sender fails the test instead of hanging it. (Sends corked until a process.nextTick
 * failed this way: Node runs nextTick callbacks queued from a microtask only once the microtask
 * queue is empty.) Needs dist/ (npm run build).
 */
const CAP_MS = 20_000;
const FIXTURE = join(root, 'test', 'fixtures', 'flush-rank.mjs');

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'rr-flush-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Outcome {
  rank: number;
  got?: number;
  spunMs?: number;
  turns?: number;
  value?: number;
}

let runs = 0;
/** Two ranks in two worker threads of this process; resolves to rank 0's report. */
async function trap(op: 'send' | 'allreduce', way: { sharedMemory: boolean; receiverPollUs: number }): Promise<Outcome> {
  const dir = join(scratch, `store-${runs++}`);
  const shared = new SharedArrayBuffer(8);
  const workers = [0, 1].map(
    (rank) =>
      new Worker(FIXTURE, {
        workerData: { rank, dir, shared, op, sharedMemory: way.sharedMemory, busyPollUs: rank === 1 ? way.receiverPollUs : 0, capMs: CAP_MS },
        stdout: false,
        stderr: false,
      }),
  );
  try {
    const reports = await Promise.all(
      workers.map(
        (w) =>
          new Promise<Outcome>((resolve, reject) => {
            let report: Outcome | undefined;
            w.on('message', (m: Outcome) => (report = m));
            w.on('error', reject);
            w.on('exit', (code) => (code === 0 && report ? resolve(report) : reject(new Error(`rank exited with code ${code} before reporting`))));
          }),
      ),
    );
    expect(reports[1].value).toBe(op === 'send' ? 42 : 3);
    return reports[0];
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

describe('a sender that never yields to the event loop', () => {
  // Over the socket: between hosts, or with RINGREDUCE_SHM=0.
  it.each(['send', 'allreduce'] as const)('%s: the message leaves over the socket', async (op) => {
    const r = await trap(op, { sharedMemory: false, receiverPollUs: 0 });
    expect(r.got, `rank 1 had not received after ${r.spunMs} ms (${r.turns} microtask turns)`).toBe(1);
    expect(r.spunMs).toBeLessThan(CAP_MS);
  }, 60_000);

  // One host: while the receiver polls, the message goes into its shared-memory mailbox, which
  // it reads without the sender's help; while it sleeps, into the socket as above.
  it.each([
    ['send', 'polling', 60_000_000],
    ['allreduce', 'polling', 60_000_000],
    ['send', 'asleep', 0],
  ] as const)('%s: the message leaves through shared memory to a receiver %s', async (op, _state, receiverPollUs) => {
    const r = await trap(op, { sharedMemory: true, receiverPollUs });
    expect(r.got, `rank 1 had not received after ${r.spunMs} ms (${r.turns} microtask turns)`).toBe(1);
    expect(r.spunMs).toBeLessThan(CAP_MS);
  }, 60_000);
});
