import { BIND_TO_VALUES, type BindTo } from '../bind.js';
import { UsageError } from '../args.js';
import { BENCH_OPS, OP_INFO, type BenchOp } from './ops.js';

/**
 * `ringrun bench`'s command line: a bandwidth sweep of one collective in nccl-tests' terms.
 * Pure, like launcher/args.ts: mistakes are UsageErrors naming the option.
 */
export interface BenchConfig {
  np: number;
  minBytes: number;
  maxBytes: number;
  factor: number;
  /** The collective measured (see ops.ts for its size and busbw). */
  op: BenchOp;
  /** The reduction of allreduce and reducescatter (nccl-tests' -o). */
  reduce: ReduceName;
  /** allreduce only. */
  compression: 'none' | 'fp16' | 'bf16';
  iters: number;
  warmup: number;
  check: boolean;
  json?: string;
  chunkBytes?: number;
  /** CPU binding of the ranks (ringrun --bind-to). */
  bindTo?: BindTo;
  /** Set by ringrun when its stderr is a terminal. */
  progress?: boolean;
  /** A busbw bar column: --bars / --no-bars, or else set by ringrun when its stdout is a terminal. */
  bars?: boolean;
}

export const REDUCE_NAMES = ['sum', 'average', 'min', 'max', 'product'] as const;
export type ReduceName = (typeof REDUCE_NAMES)[number];

export function benchHelp(): string {
  return `Usage: ringrun bench -np N [options]

Bandwidth of one collective on float32 arrays, like nccl-tests' all_reduce_perf and its
siblings. Each size is timed over --iters back-to-back operations after --warmup; a row reports
the median time of an operation (the slowest rank's), algbw = size / time and busbw = algbw x F:
  --op allreduce      size = the array reduced                       F = 2(N-1)/N
  --op reducescatter  size = the input (each rank keeps size/N)      F = (N-1)/N
  --op allgather      size = the gathered output (size/N per rank)   F = (N-1)/N
  --op broadcast      size = the array rank 0 sends                  F = 1
  --op alltoall       size = a rank's send buffer (size/N per peer)  F = (N-1)/N
  --op sendrecv       size = what rank r sends to r+1 (it receives   F = 1
                      as much from r-1 at the same time)
Ops that split the size into N parts round it down to a multiple of 4N bytes. With compression,
size and bandwidth count the float32 bytes reduced.

Options (a value may also be given as --option=value; sizes accept K, M, G suffixes):
  -np N, -n N          number of ranks (required)
  --min-bytes B        smallest size (default 4)
  --max-bytes B        largest size (default 64M)
  --factor F           size multiplier between rows (default 2)
  --op OP              ${BENCH_OPS.join(' | ')} (default allreduce)
  --reduce R           the reduction of allreduce and reducescatter:
                       sum | average | min | max | product (default sum)
  --compression C      allreduce only: none | fp16 | bf16 (default none)
  --iters K            timed operations per size (default 20)
  --warmup W           untimed operations per size first (default 5)
  --chunk-bytes B      ring chunk size (default: the library's, 1M)
  --bind-to slice|none CPU binding of the ranks, as for ringrun (default slice)
  --check              fill with integers whose results are exact and count wrong elements (#wrong)
  --json FILE          also write { meta, rows } to FILE: the settings and the rows
  --bars, --no-bars    a busbw bar after each row, on a log scale (default: when
                       stdout is a terminal)
  -h, --help           this help
`;
}

export function parseSize(v: string, name: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(v);
  if (!m) throw new UsageError(`${name} must be a size in bytes like 4, 64K, 64M, got '${v}'`, name);
  return Number(m[1]) * { '': 1, K: 1024, M: 1 << 20, G: 1 << 30 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G'];
}

/** `v` if it is one of `values`, else a UsageError listing them. */
function oneOf<T extends string>(v: string, values: readonly T[], name: string): T {
  if (!values.includes(v as T)) throw new UsageError(`${name} must be one of ${values.join(', ')}, got '${v}'`, name);
  return v as T;
}

function int(v: string, name: string, min: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min) throw new UsageError(`${name} must be an integer >= ${min}, got '${v}'`, name);
  return Number(v);
}

export type BenchParsed = { kind: 'help' } | { kind: 'bench'; config: BenchConfig };

export function parseBenchArgs(argv: readonly string[]): BenchParsed {
  const c: Partial<BenchConfig> & { check: boolean } = { check: false };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      value = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const next = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`, a);
      return argv[++i];
    };
    switch (a) {
      case '-h':
      case '--help':
        return { kind: 'help' };
      case '-np':
      case '-n':
      case '--np':
        c.np = int(next(), a, 1);
        break;
      case '--min-bytes':
        c.minBytes = parseSize(next(), a);
        break;
      case '--max-bytes':
        c.maxBytes = parseSize(next(), a);
        break;
      case '--bind-to':
        c.bindTo = oneOf(next(), BIND_TO_VALUES, a);
        break;
      case '--chunk-bytes':
        c.chunkBytes = parseSize(next(), a);
        break;
      case '--factor': {
        const v = next();
        const f = Number(v);
        if (!(f > 1) || !Number.isFinite(f)) throw new UsageError(`--factor must be a number > 1, got '${v}'`, a);
        c.factor = f;
        break;
      }
      case '--op': {
        const v = next();
        if (REDUCE_NAMES.includes(v as ReduceName)) throw new UsageError(`--op names the collective now (${BENCH_OPS.join(', ')}); for the reduction use --reduce ${v}`, a);
        c.op = oneOf(v, BENCH_OPS, a);
        break;
      }
      case '--reduce':
        c.reduce = oneOf(next(), REDUCE_NAMES, a);
        break;
      case '--compression': {
        const v = next();
        if (!['none', 'fp16', 'bf16'].includes(v)) throw new UsageError(`--compression must be none, fp16 or bf16, got '${v}'`, a);
        c.compression = v as BenchConfig['compression'];
        break;
      }
      case '--iters':
        c.iters = int(next(), a, 1);
        break;
      case '--warmup':
        c.warmup = int(next(), a, 0);
        break;
      case '--check':
        c.check = true;
        break;
      case '--json':
        c.json = next();
        break;
      case '--bars':
      case '--no-bars':
        if (value !== undefined) throw new UsageError(`${a} takes no value`, a);
        c.bars = a === '--bars';
        break;
      default:
        throw new UsageError(`unknown option '${argv[i]}'`, argv[i]);
    }
  }
  if (c.np === undefined) throw new UsageError('-np is required', '-np');
  const config: BenchConfig = {
    np: c.np,
    minBytes: c.minBytes ?? 4,
    maxBytes: c.maxBytes ?? 64 << 20,
    factor: c.factor ?? 2,
    op: c.op ?? 'allreduce',
    reduce: c.reduce ?? 'sum',
    compression: c.compression ?? 'none',
    iters: c.iters ?? 20,
    warmup: c.warmup ?? 5,
    check: c.check,
    json: c.json,
    chunkBytes: c.chunkBytes,
  };
  if (c.bindTo) config.bindTo = c.bindTo;
  if (c.bars !== undefined) config.bars = c.bars;
  if (config.minBytes < 4) throw new UsageError(`--min-bytes must be at least 4 (one float32), got ${config.minBytes}`, '--min-bytes');
  if (c.reduce !== undefined && !OP_INFO[config.op].reduces) throw new UsageError(`--reduce applies to --op allreduce and reducescatter, not ${config.op}`, '--reduce');
  if (c.compression !== undefined && config.op !== 'allreduce') throw new UsageError(`--compression applies to --op allreduce only, not ${config.op}`, '--compression');
  if (config.op === 'sendrecv' && config.np < 2) throw new UsageError('--op sendrecv needs -np 2 or more (rank r sends to r+1)', '-np');
  if (config.maxBytes < config.minBytes) throw new UsageError(`--max-bytes (${config.maxBytes}) is below --min-bytes (${config.minBytes})`, '--max-bytes');
  return { kind: 'bench', config };
}

/** The sizes of the sweep, each a multiple of 4 bytes. */
export function sweep(c: Pick<BenchConfig, 'minBytes' | 'maxBytes' | 'factor'>): number[] {
  const out: number[] = [];
  for (let b = c.minBytes; b <= c.maxBytes; b *= c.factor) {
    const bytes = Math.max(4, Math.floor(b / 4) * 4);
    if (out[out.length - 1] !== bytes) out.push(bytes);
  }
  return out;
}
