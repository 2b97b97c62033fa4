import { dtypeByCode, type DTypeInfo } from '../dtypes.js';
import { RingError, RingMismatchError, RingPeerLostError, RingProtocolError, RingTimeoutError } from '../errors.js';

/**
 * How one call names ranks: a group numbers them its own way, so errors say what the caller
 * said (`dst: 1` in a group may be world rank 3). `me`/`peer` are in that numbering.
 */
export interface P2PNames {
  me: number;
  peer: number;
}

/** One send or recv in flight. */
export interface Op {
  kind: 'send' | 'recv';
  ctx: string;
  /** World rank of the other side. */
  world: number;
  tag: number;
  dt: DTypeInfo;
  count: number;
  bytes: Uint8Array;
  names: P2PNames;
  deadline: number;
  settled: boolean;
  resolve(): void;
  reject(e: Error): void;
}

export interface SendOp extends Op {
  kind: 'send';
  /** Per link, from 0: what the peer's replies and the data frames name. */
  id: number;
  /** Its bytes went with its announcement (small, within the credit). */
  eager: boolean;
  /** Data frames handed to the link, and flushed (a large send, after its 'cts'). */
  queued: number;
  flushed: number;
  chunks: number;
  /** Its deadline passed and a 'drop' went out: the error it fails with once the receiver agrees. */
  dropping?: RingError;
}

export interface RecvOp extends Op {
  kind: 'recv';
  /** Bytes of a large send that arrived so far. */
  got: number;
}

export const labelOf = (op: Op): string => {
  const within = op.ctx.includes('/') ? `, ${op.ctx.slice(op.ctx.indexOf('/') + 1)}` : '';
  return `${op.kind} ${op.kind === 'send' ? 'to' : 'from'} rank ${op.names.peer} (tag ${op.tag}${within})`;
};

const describeCount = (n: number, dt: DTypeInfo | undefined) => `${n} ${dt?.name ?? 'unknown-dtype'} element${n === 1 ? '' : 's'}`;

/** A send and its recv disagree: the same words on both ranks, from each one's side. */
export function mismatchError(op: Op, dt: number, n: number): RingMismatchError {
  const theirs = describeCount(n, dtypeByCode(dt));
  const mine = describeCount(op.count, op.dt);
  const [sent, wanted] = op.kind === 'send' ? [mine, theirs] : [theirs, mine];
  const [sender, receiver] = op.kind === 'send' ? [op.names.me, op.names.peer] : [op.names.peer, op.names.me];
  return new RingMismatchError(`rank ${op.names.me}: ${labelOf(op)}: rank ${sender} sends ${sent} but rank ${receiver} receives ${wanted}`, {
    rank: op.names.me,
    ranks: [op.names.peer],
    op: op.kind,
    field: dt !== op.dt.code ? 'dtype' : 'count',
  });
}

export function timeoutError(op: Op, timeoutMs: number, why: string): RingTimeoutError {
  return new RingTimeoutError(`rank ${op.names.me}: ${labelOf(op)} timed out after ${timeoutMs} ms: ${why}`, {
    rank: op.names.me,
    ranks: [op.names.peer],
    op: op.kind,
  });
}

export function lostError(rank: number, peer: number, e: Error | undefined): RingError {
  if (e instanceof RingError) return e;
  return new RingPeerLostError(`rank ${rank}: rank ${peer} is gone (${e?.message ?? 'its link closed'})`, { rank, ranks: [peer] });
}

export function protocolError(rank: number, peer: number, what: string): RingProtocolError {
  return new RingProtocolError(`rank ${rank}: protocol error: rank ${peer} ${what}`, { rank, ranks: [peer] });
}

/** `e`, said by the operation (in its own numbering of ranks), when it is about a peer. */
export function namedFor(e: RingError, op: Op): RingError {
  if (!(e instanceof RingPeerLostError || e instanceof RingProtocolError)) return e;
  const Ctor = e.constructor as new (m: string, d: object) => RingError;
  const why = e.message.replace(/^rank \d+: /, '');
  return new Ctor(`rank ${op.names.me}: ${labelOf(op)} failed: ${why}`, {
    ...e.details,
    rank: op.names.me,
    ranks: e.details.ranks ?? [op.names.peer],
    op: op.kind,
  });
}
