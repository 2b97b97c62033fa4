import { describe, expect, it } from 'vitest';
import { discover, slurmTasksOnNode, tuning } from '../src/env.js';
import { defaultBusyPollUs, resolveOptions } from '../src/options.js';
import { RingMismatchError } from '../src/errors.js';

describe('environment discovery', () => {
  it('nothing set: a single process', () => {
    expect(discover({})).toMatchObject({ source: 'single', rank: 0, size: 1, localRank: 0, localSize: 1, hostStore: false });
  });

  it('ringrun', () => {
    const d = discover({ RINGRUN_STORE: '127.0.0.1:4567', RINGRUN_TOKEN: 'abc', RANK: '2', WORLD_SIZE: '4', LOCAL_RANK: '2', LOCAL_WORLD_SIZE: '4' });
    expect(d).toEqual({
      source: 'ringrun', rank: 2, size: 4, localRank: 2, localSize: 4,
      store: { host: '127.0.0.1', port: 4567 }, hostStore: false, token: 'abc',
    });
  });

  it('torchrun / Kubernetes style: rank 0 hosts the store at MASTER_ADDR:MASTER_PORT', () => {
    const env = { RANK: '0', WORLD_SIZE: '3', LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '1', MASTER_ADDR: '10.0.0.5', MASTER_PORT: '29500' };
    expect(discover(env)).toMatchObject({ source: 'torchrun', rank: 0, size: 3, localRank: 0, localSize: 1, store: { host: '10.0.0.5', port: 29500 }, hostStore: true });
    expect(discover({ ...env, RANK: '1' })).toMatchObject({ rank: 1, hostStore: false });
  });

  it('Open MPI', () => {
    const d = discover({ OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '3', OMPI_COMM_WORLD_LOCAL_RANK: '1', OMPI_COMM_WORLD_LOCAL_SIZE: '3', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29555' });
    expect(d).toMatchObject({ source: 'openmpi', rank: 1, size: 3, localRank: 1, localSize: 3, store: { host: '127.0.0.1', port: 29555 } });
  });

  it('Kubernetes Indexed Job: RANK from the completion index, a service name as MASTER_ADDR, LOCAL_* optional', () => {
    const d = discover({ RANK: '3', WORLD_SIZE: '4', MASTER_ADDR: 'rr-train-0.rr-train', MASTER_PORT: '29500', RINGREDUCE_TOKEN: 'from-a-secret' });
    expect(d).toEqual({
      source: 'torchrun', rank: 3, size: 4, localRank: 0, localSize: 1,
      store: { host: 'rr-train-0.rr-train', port: 29500 }, hostStore: false, token: 'from-a-secret',
    });
    expect(discover({ RANK: '0', WORLD_SIZE: '4', MASTER_ADDR: 'rr-train-0.rr-train', MASTER_PORT: '29500' }).hostStore).toBe(true);
  });

  it('MPICH / PMI', () => {
    const d = discover({ PMI_RANK: '3', PMI_SIZE: '4', MPI_LOCALRANKID: '1', MPI_LOCALNRANKS: '2', MASTER_ADDR: 'h', MASTER_PORT: '1' });
    expect(d).toMatchObject({ source: 'pmi', rank: 3, size: 4, localRank: 1, localSize: 2 });
  });

  it('Slurm, including SLURM_TASKS_PER_NODE expansion', () => {
    const d = discover({ SLURM_PROCID: '5', SLURM_NTASKS: '7', SLURM_LOCALID: '1', SLURM_NODEID: '2', SLURM_TASKS_PER_NODE: '2(x3),1', MASTER_ADDR: 'n1', MASTER_PORT: '2' });
    expect(d).toMatchObject({ source: 'slurm', rank: 5, size: 7, localRank: 1, localSize: 2 });
    expect(slurmTasksOnNode('2(x3),1', 3)).toBe(1);
    expect(slurmTasksOnNode('4', 0)).toBe(4);
    expect(slurmTasksOnNode('bogus', 0)).toBeUndefined();
  });

  it('precedence: ringrun over torchrun over Open MPI over PMI over Slurm', () => {
    const all = {
      RINGRUN_STORE: 'a:1', RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: 'm', MASTER_PORT: '3',
      OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '2', PMI_RANK: '0', PMI_SIZE: '2', SLURM_PROCID: '0', SLURM_NTASKS: '2',
    };
    expect(discover(all).source).toBe('ringrun');
    const { RINGRUN_STORE, ...t } = all;
    expect(discover(t).source).toBe('torchrun');
    const { RANK, WORLD_SIZE, ...o } = t;
    expect(discover(o).source).toBe('openmpi');
    const { OMPI_COMM_WORLD_RANK, ...p } = o;
    expect(discover(p).source).toBe('pmi');
    const { PMI_RANK, ...s } = p;
    expect(discover(s).source).toBe('slurm');
    void RINGRUN_STORE; void RANK; void WORLD_SIZE; void OMPI_COMM_WORLD_RANK; void PMI_RANK;
  });

  it('bad values are typed errors naming the variable', () => {
    expect(() => discover({ RANK: 'x', WORLD_SIZE: '2' })).toThrow(/RANK must be an integer >= 0, got 'x'/);
    expect(() => discover({ RANK: '2', WORLD_SIZE: '2', MASTER_ADDR: 'a', MASTER_PORT: '1' })).toThrow(/rank 2 is outside 0..1/);
    expect(() => discover({ RANK: '0', WORLD_SIZE: '2' })).toThrow(/RANK\/WORLD_SIZE say this is one of 2 ranks, but MASTER_ADDR and MASTER_PORT are not set: set both/);
    // Exactly what is missing, and no launcher blamed for variables set by hand (issue 13, item 7).
    expect(() => discover({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1' })).toThrow(/but MASTER_PORT is not set \(MASTER_ADDR is '10\.0\.0\.1'\)/);
    expect(() => discover({ RANK: '0', WORLD_SIZE: '2', MASTER_PORT: '29500' })).toThrow(/but MASTER_ADDR is not set \(MASTER_PORT is 29500\)/);
    expect(() => discover({ RANK: '1', MASTER_ADDR: 'a', MASTER_PORT: '1' })).toThrow(/RANK\/WORLD_SIZE: WORLD_SIZE is not set \(both are needed/);
    expect(() => discover({ OMPI_COMM_WORLD_RANK: '1' })).toThrow(/OMPI_COMM_WORLD_SIZE is not set/);
    expect(() => discover({ MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' })).toThrow(
      /^MASTER_ADDR and MASTER_PORT are set, but no rank variables are \(RANK and WORLD_SIZE, or those of mpirun\/Slurm\): set RANK and WORLD_SIZE/,
    );
    expect(() => discover({ RINGREDUCE_STORE: 'file:///tmp/x' })).toThrow(/^RINGREDUCE_STORE is set, but no rank variables are/);
    expect(discover({}).source).toBe('single');
    expect(() => discover({ RINGRUN_STORE: 'nohostport' })).toThrow(/RINGRUN_STORE must be host:port/);
    expect(() => discover({ OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '2', MASTER_ADDR: 'a', MASTER_PORT: '99999' })).toThrow(/MASTER_PORT/);
    try {
      discover({ RANK: '-1', WORLD_SIZE: '2' });
    } catch (e) {
      expect((e as { code: string }).code).toBe('RING_ERR_INVALID_ARG');
    }
  });

  it('tuning variables', () => {
    expect(tuning({ RINGRUN_START_TIMEOUT: '2.5', RINGREDUCE_TIMEOUT: '30', RINGREDUCE_CHUNK_BYTES: '65536', RINGREDUCE_HOST: '10.1.1.1', RINGREDUCE_NO_NATIVE: '1', RINGREDUCE_TOKEN: 't' })).toEqual({
      startTimeoutMs: 2500, timeoutMs: 30000, chunkBytes: 65536, advertiseHost: '10.1.1.1', noNative: true, token: 't', fusionBytes: undefined, stallWarningMs: undefined,
      iface: undefined, tlsFiles: undefined, verbose: false,
    });
    expect(() => tuning({ RINGREDUCE_TIMEOUT: 'soon' })).toThrow(/RINGREDUCE_TIMEOUT must be a number of seconds/);
    expect(tuning({ RINGREDUCE_BUSY_POLL_US: '200' }).busyPollUs).toBe(200);
    expect(tuning({ RINGREDUCE_BUSY_POLL_BACKOFF: '0' }).busyPollBackoff).toBe(false);
    expect(tuning({ RINGREDUCE_BUSY_POLL_BACKOFF: '1' }).busyPollBackoff).toBe(true);
    expect(tuning({}).busyPollBackoff).toBeUndefined();
    expect(() => tuning({ RINGREDUCE_BUSY_POLL_BACKOFF: 'sometimes' })).toThrow(/RINGREDUCE_BUSY_POLL_BACKOFF must be 1 or 0/);
    expect(tuning({ RINGREDUCE_SHM: '0' }).sharedMemory).toBe(false);
    expect(tuning({ RINGREDUCE_SHM: 'yes' }).sharedMemory).toBe(true);
    expect(tuning({}).sharedMemory).toBeUndefined();
    expect(() => tuning({ RINGREDUCE_SHM: 'maybe' })).toThrow(/RINGREDUCE_SHM must be 1 or 0/);
    expect(() => tuning({ RINGREDUCE_BUSY_POLL_US: '-1' })).toThrow(/RINGREDUCE_BUSY_POLL_US must be an integer >= 0/);
    expect(tuning({ RINGREDUCE_EARLY_BYTES: '268435456' }).earlyBytes).toBe(256 << 20);
    expect(() => tuning({ RINGREDUCE_EARLY_BYTES: '64M' })).toThrow(/RINGREDUCE_EARLY_BYTES must be an integer >= 0, got '64M'/);
  });
});

describe('multi-host environment', () => {
  it('RINGREDUCE_STORE=file:///dir: a shared directory, nobody hosts a store, no MASTER_ADDR needed', () => {
    const mpi = { OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '3', OMPI_COMM_WORLD_LOCAL_RANK: '0', OMPI_COMM_WORLD_LOCAL_SIZE: '3' };
    expect(discover({ ...mpi, RINGREDUCE_STORE: 'file:///shared/rr-42' })).toMatchObject({ source: 'openmpi', rank: 0, store: { dir: '/shared/rr-42' }, hostStore: false });
    // Percent-escapes are decoded like any file URL.
    expect(discover({ ...mpi, RINGREDUCE_STORE: 'file:///shared/my%20dir' }).store).toEqual({ dir: '/shared/my dir' });
    // It wins over MASTER_ADDR/MASTER_PORT.
    expect(discover({ ...mpi, RINGREDUCE_STORE: 'file:///d', MASTER_ADDR: 'a', MASTER_PORT: '1' }).store).toEqual({ dir: '/d' });
  });

  it('RINGREDUCE_STORE=host:port (or tcp://host:port): rank 0 hosts the store there', () => {
    const t = { RANK: '0', WORLD_SIZE: '2' };
    expect(discover({ ...t, RINGREDUCE_STORE: '10.0.0.1:29500' })).toMatchObject({ store: { host: '10.0.0.1', port: 29500 }, hostStore: true });
    expect(discover({ ...t, RANK: '1', RINGREDUCE_STORE: 'tcp://[fd00::1]:7' })).toMatchObject({ store: { host: 'fd00::1', port: 7 }, hostStore: false });
  });

  it('bad RINGREDUCE_STORE values name the variable', () => {
    const t = { RANK: '0', WORLD_SIZE: '2' };
    expect(() => discover({ ...t, RINGREDUCE_STORE: 'file://relative/dir' })).toThrow(/RINGREDUCE_STORE must be file:\/\/\/absolute\/dir or host:port/);
    expect(() => discover({ ...t, RINGREDUCE_STORE: 'file:///' })).toThrow(/RINGREDUCE_STORE must name a directory below \//);
    expect(() => discover({ ...t, RINGREDUCE_STORE: 'nowhere' })).toThrow(/RINGREDUCE_STORE must be host:port/);
    // Without any store, the message offers the file store too.
    expect(() => discover(t)).toThrow(/RINGREDUCE_STORE=file:\/\/\/shared\/dir/);
  });

  it('Slurm with a file store: rank, local rank and size from SLURM_*, no address needed', () => {
    const d = discover({ SLURM_PROCID: '3', SLURM_NTASKS: '4', SLURM_LOCALID: '1', SLURM_NODEID: '1', SLURM_TASKS_PER_NODE: '2(x2)', RINGREDUCE_STORE: 'file:///scratch/rr-77' });
    expect(d).toMatchObject({ source: 'slurm', rank: 3, size: 4, localRank: 1, localSize: 2, store: { dir: '/scratch/rr-77' }, hostStore: false });
  });

  it('RINGREDUCE_IFACE, RINGREDUCE_VERBOSE and the TLS file variables', () => {
    expect(tuning({ RINGREDUCE_IFACE: 'eth1', RINGREDUCE_VERBOSE: '1' })).toMatchObject({ iface: 'eth1', verbose: true });
    expect(tuning({ RINGREDUCE_IFACE: '' })).toMatchObject({ iface: undefined, verbose: false });
    expect(tuning({ RINGREDUCE_TLS_CERT: '/c.pem', RINGREDUCE_TLS_KEY: '/k.pem', RINGREDUCE_TLS_CA: '/ca.pem' }).tlsFiles).toEqual({ cert: '/c.pem', key: '/k.pem', ca: '/ca.pem' });
    expect(tuning({ RINGREDUCE_TLS_CERT: '/c.pem', RINGREDUCE_TLS_KEY: '/k.pem' }).tlsFiles).toEqual({ cert: '/c.pem', key: '/k.pem' });
    expect(() => tuning({ RINGREDUCE_TLS_CERT: '/c.pem' })).toThrow(/needs both RINGREDUCE_TLS_CERT and RINGREDUCE_TLS_KEY \(got only the certificate\)/);
    expect(() => tuning({ RINGREDUCE_TLS_CA: '/ca.pem' })).toThrow(/got only RINGREDUCE_TLS_CA/);
  });

  it('resolveOptions: file stores, iface, and TLS files that cannot be read', () => {
    const env = { RANK: '1', WORLD_SIZE: '2', RINGREDUCE_STORE: 'file:///tmp/rr-x', RINGREDUCE_IFACE: 'eth9' };
    expect(resolveOptions({}, env)).toMatchObject({ store: { dir: '/tmp/rr-x' }, hostStore: false, iface: 'eth9' });
    expect(resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y' }, {})).toMatchObject({ store: { dir: '/tmp/rr-y' }, hostStore: false });
    // busyPollUs: formRing may revise the default only (see ring.test's withPollingForMachine).
    expect(resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y' }, {}).busyPollIsDefault).toBe(true);
    expect(resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y', busyPollUs: 1000 }, {}).busyPollIsDefault).toBe(false);
    expect(resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y' }, { RINGREDUCE_BUSY_POLL_US: '1000' }).busyPollIsDefault).toBe(false);
    // busyPollBackoff: off by default; the option wins over the environment.
    expect(resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y' }, {}).busyPollBackoff).toBe(false);
    expect(resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y' }, { RINGREDUCE_BUSY_POLL_BACKOFF: '1' }).busyPollBackoff).toBe(true);
    expect(resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y', busyPollBackoff: false }, { RINGREDUCE_BUSY_POLL_BACKOFF: '1' }).busyPollBackoff).toBe(false);
    expect(() => resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y', busyPollBackoff: 'no' as never }, {})).toThrow(/busyPollBackoff/);
    expect(() => resolveOptions({ rank: 0, size: 2, store: 'file:///tmp/rr-y', hostStore: true }, {})).toThrow(/hostStore cannot be true with a file:\/\/ store/);
    expect(() => resolveOptions({}, { RINGREDUCE_TLS_CERT: '/nonexistent/c.pem', RINGREDUCE_TLS_KEY: '/nonexistent/k.pem' })).toThrow(
      /RINGREDUCE_TLS_CERT: cannot read '\/nonexistent\/c.pem': ENOENT/,
    );
    expect(() => resolveOptions({ tls: { cert: 'x', key: '' } }, {})).toThrow(/options.tls.key must be a non-empty PEM string/);
    expect(() => resolveOptions({ iface: '' }, {})).toThrow(/options.iface/);
  });
});

describe('init options', () => {
  it('defaults, environment, explicit options win', () => {
    const r = resolveOptions({}, {});
    expect(r).toMatchObject({ rank: 0, size: 1, chunkBytes: 1 << 20, maxInflight: 4, timeoutMs: 300_000, startTimeoutMs: 60_000, tokenIsDefault: true });
    const env = { RINGRUN_STORE: '127.0.0.1:9', RINGRUN_TOKEN: 'tok', RANK: '1', WORLD_SIZE: '2', RINGREDUCE_CHUNK_BYTES: '4096' };
    expect(resolveOptions({}, env)).toMatchObject({ rank: 1, size: 2, chunkBytes: 4096, token: 'tok', store: { host: '127.0.0.1', port: 9 } });
    expect(resolveOptions({ chunkBytes: 8192, timeoutMs: 0 }, env)).toMatchObject({ chunkBytes: 8192, timeoutMs: 0 });
    // Unset, busy polling follows the host: on while its ranks have a CPU each, off when oversubscribed.
    expect(resolveOptions({}, { ...env, LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '1' }).busyPollUs).toBe(defaultBusyPollUs(1));
    expect(defaultBusyPollUs(1)).toBe(1000);
    expect(defaultBusyPollUs(2, 2)).toBe(1000);
    expect(defaultBusyPollUs(4, 2)).toBe(0);
    expect(resolveOptions({}, { ...env, LOCAL_WORLD_SIZE: '4096' }).busyPollUs).toBe(0);
    expect(resolveOptions({}, { ...env, RINGREDUCE_BUSY_POLL_US: '300' })).toMatchObject({ busyPollUs: 300 });
    expect(resolveOptions({}, env)).toMatchObject({ sharedMemory: true });
    expect(resolveOptions({}, { ...env, RINGREDUCE_SHM: 'off' })).toMatchObject({ sharedMemory: false });
    expect(resolveOptions({ sharedMemory: true }, { ...env, RINGREDUCE_SHM: '0' })).toMatchObject({ sharedMemory: true });
    expect(resolveOptions({ busyPollUs: 50 }, { ...env, RINGREDUCE_BUSY_POLL_US: '300' })).toMatchObject({ busyPollUs: 50 });
    // The early-frame budget: 64 MiB, the environment, an option; never below one frame.
    expect(resolveOptions({}, env)).toMatchObject({ earlyBytes: 64 << 20 });
    expect(resolveOptions({}, { ...env, RINGREDUCE_EARLY_BYTES: String(256 << 20) })).toMatchObject({ earlyBytes: 256 << 20 });
    expect(resolveOptions({ earlyBytes: 1 << 20 }, { ...env, RINGREDUCE_EARLY_BYTES: String(256 << 20) })).toMatchObject({ earlyBytes: 1 << 20 });
    expect(resolveOptions({ chunkBytes: 64 << 20 }, {})).toMatchObject({ earlyBytes: 64 << 20 });
    expect(resolveOptions({ rank: 1, size: 3, store: 'h:5' }, {})).toMatchObject({ rank: 1, size: 3, hostStore: false, store: { host: 'h', port: 5 } });
  });

  it('rejects bad options naming them', () => {
    expect(() => resolveOptions({ chunkBytes: 0 }, {})).toThrow(/options.chunkBytes must be an integer >= 8, got 0/);
    expect(() => resolveOptions({ maxInflight: 1.5 }, {})).toThrow(/options.maxInflight/);
    expect(() => resolveOptions({ timeoutMs: -1 }, {})).toThrow(/options.timeoutMs/);
    expect(() => resolveOptions({ startTimeoutMs: 0 }, {})).toThrow(/options.startTimeoutMs/);
    expect(() => resolveOptions({ rank: 1 }, {})).toThrow(/given together/);
    expect(() => resolveOptions({ rank: 3, size: 2 }, {})).toThrow(/options.rank must be in 0..1/);
    expect(() => resolveOptions({ rank: 0, size: 2 }, {})).toThrow(/no rendezvous store/);
    expect(() => resolveOptions({ token: '' }, {})).toThrow(/options.token/);
    expect(() => resolveOptions({ busyPollUs: 0.5 }, {})).toThrow(/options.busyPollUs must be an integer >= 0/);
    expect(() => resolveOptions({ sharedMemory: 'no' as unknown as boolean }, {})).toThrow(/options.sharedMemory must be a boolean/);
    expect(() => resolveOptions({ earlyBytes: 1000 }, {})).toThrow(/options.earlyBytes must be an integer >= 1048576, got 1000/);
  });
});

describe('rank records at rendezvous', () => {
  it('ranks of different ringreduce versions (link protocols) refuse to form a ring, naming them', async () => {
    const { checkTable, PROTOCOL } = await import('../src/rendezvous/records.js');
    const rec = { host: '127.0.0.1', port: 1, size: 3, chunkBytes: 1 << 20, pid: 1, hostname: 'h', machine: 'm', tls: false };
    expect(() => checkTable(0, [0, 1, 2].map(() => ({ ...rec, protocol: PROTOCOL })))).not.toThrow();
    const old = [{ ...rec, protocol: PROTOCOL }, { ...rec }, { ...rec, protocol: PROTOCOL }];
    expect(() => checkTable(0, old)).toThrow(RingMismatchError);
    expect(() => checkTable(0, old)).toThrow(
      `rank 0: ranks disagree on the link protocol, i.e. run different ringreduce versions (install the same one everywhere) (ranks 0,2: ${PROTOCOL}; rank 1: older than 2)`,
    );
  });
});
