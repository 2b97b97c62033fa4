import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { WebSocket, WebSocketServer } from 'ws';
import { describe, expect, it } from 'vitest';
import { RingError } from '../src/index.js';
import { resolveOptions } from '../src/options.js';
import { machineKey } from '../src/rendezvous/address.js';
import { PROTOCOL } from '../src/rendezvous/records.js';
import { formRing } from '../src/rendezvous/ring.js';
import { closeServer, startStoreServer, StoreClient } from '../src/rendezvous/store.js';
import { encodeReply, KIND_SHM_OFFER, noOffer } from '../src/transport/shm/region.js';
import { clientHandshake, serverHandshake } from '../src/transport/ws/auth.js';
import { Inbox } from '../src/transport/ws/inbox.js';
import { WsLink } from '../src/transport/ws/link.js';
import { connect, listen } from '../src/transport/ws/socket.js';
import { withDeadline } from './helpers/reference.js';

/**
 * A neighbour that closes its sockets during ring formation, right after the shared-memory offer
 * (issue 14, row 5), over real sockets: an impostor with the job token takes the last rank's place
 * in a 2- or 3-rank ring and hangs up at one moment of the set-up. The real ranks (in this process)
 * have no operation deadline (timeoutMs 0, as RINGREDUCE_TIMEOUT=0): before, such runs waited
 * for the op deadline or forever, because a close that came before the communicator had set its
 * handlers was never delivered. Every run must now end in RING_ERR_PEER_LOST, well before the
 * start deadline, on every real rank. One clock (performance.now) measures from the hang-up.
 */
const START_TIMEOUT_MS = Number(process.env.HOSTILE_START_MS ?? 30_000);
/** What the tests demand; the issue asks for 1 s, measured figures are printed. Generous for a loaded 2-core machine. */
const BOUND_MS = 5_000;
const RUNS = Number(process.env.HOSTILE_RUNS ?? 4);

type Moment =
  /** sends its offer to rank 0 and closes both sockets at once */
  | 'offer-then-close'
  /** closes both sockets as soon as its left neighbour's offer arrives (before replying) */
  | 'close-on-offer'
  /** completes the set-up (its offer out, the left neighbour's declined), then closes both sockets */
  | 'setup-then-close'
  /**
   * sends its offer to rank 0 and closes only that socket; 100 ms later it answers its left
   * neighbour's offer on the other one (which it keeps): rank 0 is still waiting for a reply when
   * the close comes, so the close precedes the communicator's handlers
   */
  | 'offer-then-close-one';

interface Outcome {
  errors: Array<RingError | undefined>;
  /** ms from the hang-up to each real rank's init failing */
  after: number[];
}

async function ringWhereLastLeaves(size: 2 | 3, moment: Moment, o: { startTimeoutMs?: number; silent?: boolean } = {}): Promise<Outcome> {
  const me = size - 1;
  const token = randomBytes(16).toString('hex');
  const logger = { warn: () => {}, info: () => {} };
  const store = await startStoreServer({ host: '127.0.0.1', port: 0, token, worldSize: size, logger });
  const { server, endpoint } = await listen('127.0.0.1', 0, 1 << 20);
  let closedAt = NaN;
  const sockets: WebSocket[] = [];
  try {
    const startTimeoutMs = o.startTimeoutMs ?? START_TIMEOUT_MS;
    const real = Array.from({ length: size - 1 }, (_, rank) =>
      formRing(
        resolveOptions(
          { rank, size, token, hostStore: false, store: `127.0.0.1:${store.endpoint.port}`, chunkBytes: 4096, timeoutMs: 0, startTimeoutMs, logger },
          {},
        ),
      ).then(
        (g) => ({ g, at: performance.now() }),
        (e: RingError) => ({ e, at: performance.now() }),
      ),
    );
    // Rank 0 connects here (the impostor is its left neighbour): the impostor offers on that link.
    const fromRight = new Promise<Inbox>((resolve, reject) =>
      server.on('connection', (ws: WebSocket) => {
        sockets.push(ws);
        const inbox = new Inbox(ws);
        serverHandshake(inbox, { token, serverId: `rank:${me}`, challenge: { rank: me, role: 'rank' }, admit: () => undefined, timeoutMs: 5000, peer: 'rank 0' }).then(
          () => resolve(inbox),
          reject,
        );
      }),
    );
    const sc = await StoreClient.connect(store.endpoint, token, me, Date.now() + 10_000);
    await sc.set(`ring/${me}`, { host: '127.0.0.1', port: endpoint.port, size, chunkBytes: 4096, tls: false, protocol: PROTOCOL, machine: machineKey(), pid: process.pid, hostname: 'impostor' });
    const keys = Array.from({ length: size }, (_, r) => `ring/${r}`);
    const table = (await sc.get(keys, 10_000)) as Array<{ host: string; port: number }>;
    sc.close();
    // The impostor connects to its left neighbour, which offers it shared memory on that link.
    const toLeft = await connect(table[me - 1], 1 << 20, Date.now() + 10_000, `rank ${me - 1}`);
    sockets.push(toLeft.socket);
    await clientHandshake(toLeft, { token, rank: me, serverId: `rank:${me - 1}`, timeoutMs: 5000, peer: `rank ${me - 1}` });
    const right = await withDeadline(fromRight, 10_000, 'rank 0 connecting to the impostor');
    const hangUp = (which: WebSocket[]) => {
      closedAt = performance.now();
      for (const ws of which) ws.terminate();
    };
    const leftOffer = new Promise<void>((resolve) => toLeft.drain((data) => data[0] === KIND_SHM_OFFER && resolve()));
    const decline = () => new Promise<void>((resolve) => toLeft.socket.send(encodeReply(false, 'impostor'), () => resolve()));
    right.drain(() => {});
    right.socket.send(noOffer());
    if (moment === 'offer-then-close') {
      hangUp([right.socket, toLeft.socket]);
    } else if (moment === 'offer-then-close-one') {
      hangUp([right.socket]);
      await withDeadline(leftOffer, 10_000, 'the offer from the left');
      await new Promise((r) => setTimeout(r, 100));
      await decline();
    } else if (moment === 'close-on-offer') {
      await withDeadline(leftOffer, 10_000, 'the offer from the left');
      hangUp([right.socket, toLeft.socket]);
    } else {
      await withDeadline(leftOffer, 10_000, 'the offer from the left');
      await decline();
      // The set-up is complete on the real ranks' side once the reply is out; a silent impostor
      // then just never sends its descriptor of the start-up barrier.
      if (o.silent) closedAt = performance.now();
      else hangUp([right.socket, toLeft.socket]);
    }
    const done = await withDeadline(Promise.all(real), startTimeoutMs + 15_000, `${moment}: the real ranks' init`);
    for (const d of done) if ('g' in d) await d.g.shutdown().catch(() => {});
    return { errors: done.map((d) => ('e' in d ? d.e : undefined)), after: done.map((d) => d.at - closedAt) };
  } finally {
    for (const ws of sockets) ws.terminate();
    await closeServer(server as WebSocketServer);
    await store.close();
  }
}

describe('a neighbour that closes its sockets right after the shared-memory offer (issue 14, row 5)', () => {
  const cases = ([2, 3] as const).flatMap((size) =>
    (['offer-then-close', 'close-on-offer', 'setup-then-close', 'offer-then-close-one'] as Moment[]).map((moment) => ({ size, moment })),
  );
  it.each(cases)(`N=$size, $moment: every real rank fails init with RING_ERR_PEER_LOST within ${BOUND_MS} ms, ${RUNS} runs (no operation deadline)`, async ({ size, moment }) => {
    const worst: number[] = [];
    const tally = new Map<string, number>();
    for (let run = 0; run < RUNS; run++) {
      const { errors, after } = await ringWhereLastLeaves(size, moment);
      errors.forEach((e, r) => {
        const what = `N=${size} ${moment} run ${run}: rank ${r}`;
        expect(e, `${what} formed a ring with a peer that left`).toBeInstanceOf(RingError);
        tally.set(e!.code, (tally.get(e!.code) ?? 0) + 1);
        expect(e!.code, `${what}: ${e!.message}`).toBe('RING_ERR_PEER_LOST');
        expect(after[r], `${what}: ${e!.message}`).toBeLessThan(BOUND_MS);
      });
      worst.push(Math.max(...after));
    }
    console.log(`N=${size} ${moment}: ${RUNS} runs, ${[...tally].map(([k, v]) => `${k} x${v}`).join(', ')}; ms from the hang-up to the last init failing: ${worst.map((t) => t.toFixed(0)).join(' ')}`);
  });

  it('the start-up barrier runs under the start deadline: a neighbour that completes the set-up and then stays silent fails init with RING_ERR_TIMEOUT', async () => {
    const t0 = performance.now();
    const { errors } = await ringWhereLastLeaves(2, 'setup-then-close', { silent: true, startTimeoutMs: 5000 });
    const ms = performance.now() - t0;
    expect(errors[0], 'rank 0').toBeInstanceOf(RingError);
    expect(errors[0]!.code, errors[0]!.message).toBe('RING_ERR_TIMEOUT');
    expect(errors[0]!.message).toMatch(/start timeout/);
    expect(errors[0]!.details).toMatchObject({ rank: 0, ranks: [1], op: 'init' });
    expect(ms).toBeLessThan(5000 + BOUND_MS + 10_000);
  });
});

describe('a link closed before its owner set handlers', () => {
  it('tells the owner at once when it does (real sockets)', async () => {
    const { server, endpoint } = await listen('127.0.0.1', 0, 1 << 20);
    try {
      const accepted = new Promise<WebSocket>((resolve) => server.on('connection', resolve));
      const inbox = await connect(endpoint, 1 << 20, Date.now() + 5000, 'test server');
      const link = new WsLink(1, 'rank 1 (test)', inbox);
      const peer = await accepted;
      const gone = new Promise<void>((resolve) => inbox.socket.once('close', () => resolve()));
      peer.terminate();
      await withDeadline(gone, 5000, 'the close');
      const closed = new Promise<Error | undefined>((resolve) => link.setHandlers({ data: () => {}, control: () => {}, closed: resolve }));
      const e = await withDeadline(closed, 2000, 'closed() after setHandlers');
      expect(e?.message).toMatch(/connection to rank 1 \(test\) closed/);
    } finally {
      await closeServer(server as WebSocketServer);
    }
  });
});
