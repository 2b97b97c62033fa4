import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as rr from '../src/index.js';
import { psServerEnv, tuning } from '../src/env.js';
import { placeServers } from '../src/launcher/layout.js';
import { parseArgs } from '../src/launcher/args.js';
import { root, runNode } from './helpers/run.js';
import { taggedResults } from './helpers/results.js';

/** The parameter-server options and environment: every bad value is RING_ERR_INVALID_ARG naming it. */
describe('DistributedOptimizer({ parameterServer }) options', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
    await rr.init();
  });
  afterAll(() => rr.shutdown());

  it.each([
    [{ parameterServer: null }, /options.parameterServer must be an object/],
    [{ parameterServer: { mode: 'fast' } }, /options.parameterServer.mode must be 'sync', 'async' or 'stale', got "fast"/],
    [{ parameterServer: { mode: 'stale', staleness: -1 } }, /options.parameterServer.staleness must be an integer >= 0, got -1/],
    [{ parameterServer: { mode: 'stale', staleness: 1.5 } }, /staleness must be an integer/],
    [{ parameterServer: { restore: 'relative/dir' } }, /options.parameterServer.restore must be an absolute directory path/],
    [{ parameterServer: {}, op: 'sum' }, /parameterServer does not combine with options.op 'sum'/],
    [{ parameterServer: {}, gradientPredivideFactor: 2 }, /does not combine with options.gradientPredivideFactor/],
  ])('%j is refused', (options, message) => {
    expect(() => new rr.DistributedOptimizer(tf.train.sgd(0.1), options as never)).toThrow(message);
  });

  it('without servers in the job: a typed error naming ringrun --servers; only one such optimizer per process', async () => {
    const v = tf.variable(tf.ones([3]), true, 'ps-options/v');
    const opt = new rr.DistributedOptimizer(tf.train.sgd(0.1), { parameterServer: { mode: 'async', staleness: 0 } });
    expect(() => opt.applyGradients({ 'ps-options/v': tf.ones([3]) })).toThrow(expect.objectContaining({ code: 'RING_ERR_INVALID_ARG', message: expect.stringMatching(/needs parameter servers: start the job with ringrun --servers S/) }));
    await expect(opt.saveServerState('/tmp/x')).rejects.toThrow(/needs parameter servers/);
    await expect(opt.saveServerState('x')).rejects.toThrow(/saveServerState: dir must be an absolute directory path/);
    expect(() => new rr.DistributedOptimizer(tf.train.sgd(0.1), { parameterServer: {} })).toThrow(/only one optimizer per process may use parameter servers/);
    const ring = new rr.DistributedOptimizer(tf.train.sgd(0.1));
    expect(() => ring.parameterServerStats()).toThrow(/this optimizer has no options.parameterServer/);
    await expect(ring.pullServerWeights()).rejects.toThrow(/this optimizer has no options.parameterServer/);
    v.dispose();
  });

  it('pullServerWeights() the callback refuses an optimizer without parameter servers', async () => {
    const m = tf.sequential({ layers: [tf.layers.dense({ units: 1, inputShape: [1] })] });
    m.compile({ optimizer: tf.train.sgd(0.1), loss: 'meanSquaredError' });
    await expect(m.fit(tf.ones([2, 1]), tf.ones([2, 1]), { epochs: 1, verbose: 0, callbacks: [rr.callbacks.pullServerWeights()] })).rejects.toThrow(
      /pullServerWeights: the model's optimizer is no DistributedOptimizer with options.parameterServer/,
    );
  });
});

describe('ringrun --servers placement', () => {
  it('servers go round-robin over the distinct -H hosts, else on this host', () => {
    const { config } = parseArgs(['-H', 'node-a:2,node-b:2', '--servers', '3', 'node', 'x.js'], {}) as { kind: 'run'; config: Parameters<typeof placeServers>[0] };
    expect(placeServers(config)).toEqual([
      { host: 'node-a', local: false },
      { host: 'node-b', local: false },
      { host: 'node-a', local: false },
    ]);
    const local = parseArgs(['-np', '2', '--servers', '2', '--allow-worker-loss', 'node', 'x.js'], {}) as { kind: 'run'; config: Parameters<typeof placeServers>[0] & { allowWorkerLoss?: boolean } };
    expect(placeServers(local.config)).toEqual([{ host: 'localhost', local: true }, { host: 'localhost', local: true }]);
    expect(local.config.allowWorkerLoss).toBe(true);
  });
});

describe('parameter-server environment', () => {
  it('RINGREDUCE_PS_SERVERS for workers, RINGREDUCE_PS_SERVER(S) and the store for servers', () => {
    expect(tuning({ RINGREDUCE_PS_SERVERS: '2' }).psServers).toBe(2);
    expect(() => tuning({ RINGREDUCE_PS_SERVERS: 'two' })).toThrow(/RINGREDUCE_PS_SERVERS must be an integer >= 0, got 'two'/);
    expect(psServerEnv({ RINGREDUCE_PS_SERVER: '1', RINGREDUCE_PS_SERVERS: '2', RINGRUN_STORE: '127.0.0.1:5' })).toEqual({ server: 1, servers: 2, store: '127.0.0.1:5' });
    expect(psServerEnv({ RINGREDUCE_PS_SERVER: '0', RINGREDUCE_PS_SERVERS: '1', MASTER_ADDR: 'h', MASTER_PORT: '7' }).store).toBe('h:7');
    expect(() => psServerEnv({ RINGREDUCE_PS_SERVERS: '2' })).toThrow(/needs RINGREDUCE_PS_SERVER \(its index, 0..S-1\) and RINGREDUCE_PS_SERVERS/);
    expect(() => psServerEnv({ RINGREDUCE_PS_SERVER: '2', RINGREDUCE_PS_SERVERS: '2', RINGRUN_STORE: 'h:1' })).toThrow(/RINGREDUCE_PS_SERVER must be in 0..1/);
    expect(() => psServerEnv({ RINGREDUCE_PS_SERVER: '0', RINGREDUCE_PS_SERVERS: '1' })).toThrow(/needs the job's rendezvous store/);
  });

  it('a server started by hand with a bad environment exits 1 saying what is missing', async () => {
    const r = await runNode([join(root, 'dist', 'ps', 'server-main.js')], { RINGREDUCE_PS_SERVER: '', RINGREDUCE_PS_SERVERS: '', RINGRUN_STORE: '' }, 20_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/parameter server failed: RING_ERR_INVALID_ARG: a parameter server needs RINGREDUCE_PS_SERVER/);
  });

  it('under another launcher (torchrun-style variables): workers and a server started by hand find each other', async () => {
    const port = String(20_000 + Math.floor(Math.random() * 20_000));
    const common = { MASTER_ADDR: '127.0.0.1', MASTER_PORT: port, RINGREDUCE_TOKEN: 'secret-of-this-test', RINGREDUCE_PS_SERVERS: '1', STEPS: '3', BATCH: '4', MODE: 'async' };
    const fixture = join(root, 'test', 'fixtures', 'ps-train.mjs');
    const [w0, w1, s0] = await Promise.all([
      runNode([fixture], { ...common, RANK: '0', WORLD_SIZE: '2' }, 60_000),
      runNode([fixture], { ...common, RANK: '1', WORLD_SIZE: '2' }, 60_000),
      runNode([join(root, 'dist', 'ps', 'server-main.js')], { ...common, RINGREDUCE_PS_SERVER: '0' }, 60_000),
    ]);
    expect(w0.code, w0.stderr).toBe(0);
    expect(w1.code, w1.stderr).toBe(0);
    expect(s0.code, s0.stderr).toBe(0);
    const [a] = taggedResults<{ rank: number; weights: unknown; stats: { updates: number } }>(w0.stdout, 'WEIGHTS');
    const [b] = taggedResults<{ rank: number; weights: unknown }>(w1.stdout, 'WEIGHTS');
    expect(a.stats.updates).toBe(3);
    expect(b.weights).toEqual(a.weights);
    expect(s0.stderr).toMatch(/parameter server 0: 6 updates/);
  });
});
