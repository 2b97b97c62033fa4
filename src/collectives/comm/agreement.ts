import type { RingMismatchError } from '../../errors.js';
import type { LinkControlMessage } from '../../transport/messages.js';
import { firstDifference, mismatchError, sameDescriptor, validateDescriptor, validateInline, type OpDescriptor } from '../descriptor.js';

/**
 * How a descriptor reached this rank: around the ring, or on a direct link (see direct-route.ts).
 * A rank's descriptor may come both ways when ranks take different routes for one operation.
 */
export type Via = 'ring' | 'direct';
const VIA_BIT = { ring: 1, direct: 2 } as const;

/**
 * One operation's table of descriptors, one per rank, as they arrive around the ring, and how far
 * the agreement checks have got.
 *
 * Data from the left is applied only once the left's descriptor matched ours (a disagreeing rank
 * can never make us read its bytes as ours), and an operation completes only once all N
 * descriptors agree — so a mismatch becomes the same typed error on every rank, and the table's
 * arrival doubles as proof that every rank reached the operation (which makes barrier free).
 */
export class DescriptorTable {
  /** Every rank's descriptor and inline payload (see Collective.inline), indexed by rank. */
  readonly descs: (OpDescriptor | undefined)[];
  readonly inline: (Uint8Array | undefined)[];
  /** Per rank, the routes its descriptor came by (VIA_BIT; both for this rank's own). */
  private readonly via: Uint8Array;
  private count = 0;
  /** The left neighbour's descriptor matched ours: its data may be applied. */
  leftChecked = false;
  /** It did not: its data is never applied, and the full table names the difference. */
  leftMismatch = false;
  /** Every descriptor is in and they agree. */
  checked = false;

  constructor(size: number) {
    this.descs = new Array(size).fill(undefined);
    this.inline = new Array(size).fill(undefined);
    this.via = new Uint8Array(size);
  }

  /**
   * Rank `rank`'s descriptor, arrived by `via` (absent: this rank's own). A second copy that came
   * the other way must be the same (an honest rank sends one descriptor): the problem, if not.
   */
  add(rank: number, d: OpDescriptor, p: Uint8Array | undefined, via?: Via): string | undefined {
    const first = this.descs[rank];
    this.via[rank] |= via ? VIA_BIT[via] : VIA_BIT.ring | VIA_BIT.direct;
    if (via === 'ring') this.ringSeen = true;
    if (first) {
      const same = sameDescriptor(first, d) && (p === undefined ? this.inline[rank] === undefined : this.inline[rank] !== undefined && Buffer.from(p).equals(this.inline[rank]!));
      return same ? undefined : `sent a descriptor of rank ${rank} that differs from the one that came the other way`;
    }
    this.descs[rank] = d;
    this.inline[rank] = p;
    this.count++;
    return undefined;
  }

  /** Whether rank `rank`'s descriptor came by `via`. */
  came(rank: number, via: Via): boolean {
    return (this.via[rank] & VIA_BIT[via]) !== 0;
  }

  /** Some other rank's descriptor came around the ring: someone takes the ring's route. */
  ringSeen = false;

  /**
   * Compares the left neighbour's descriptor with ours, once, when both are in. True if it has
   * just turned out to differ (the caller then drops what it holds of the left's data).
   */
  checkLeft(own: OpDescriptor, left: number): boolean {
    const l = this.descs[left];
    if (this.leftChecked || this.leftMismatch || !l) return false;
    if (firstDifference(own, l) === undefined) this.leftChecked = true;
    else this.leftMismatch = true;
    return this.leftMismatch;
  }

  /** Every rank's descriptor is in and not yet checked. */
  get ready(): boolean {
    return !this.checked && this.count === this.descs.length;
  }

  /** Checks a full table against `own`: the mismatch error (the same on every rank), or none. */
  check(rank: number, own: OpDescriptor, seq: number): RingMismatchError | undefined {
    const descs = this.descs as OpDescriptor[];
    const mismatch = descs.every((d) => sameDescriptor(d, own)) ? undefined : mismatchError(descs, rank, own, seq);
    if (!mismatch) this.checked = true;
    return mismatch;
  }

  /** Ranks whose descriptor has not arrived. */
  missing(): number[] {
    return this.descs.map((x, r) => (x ? -1 : r)).filter((r) => r >= 0);
  }
}

/** How far ahead of this rank a peer may announce operations. */
export const SEQ_WINDOW = 1024;

/**
 * Checks a descriptor message rank `sender` passed on (`how` names its role, e.g. '(left
 * neighbour)'): the descriptor and inline payload themselves (the link checked only the envelope;
 * m.d becomes the clean copy, so only the known fields travel further), its origin, and how far
 * ahead its sequence number is. Returns the clean descriptor, or the problem (completing "rank
 * <sender> ..."; `malformed` when the message itself is bad).
 */
export function checkDescriptorMessage(
  m: Extract<LinkControlMessage, { t: 'desc' }>,
  sender: number,
  how: string,
  size: number,
  me: number,
  nextSeq: number,
): { d: OpDescriptor } | { problem: string; malformed: boolean } {
  let d: OpDescriptor;
  try {
    d = validateDescriptor(m.d, `rank ${sender} ${how}`, size);
    validateInline(m.p, d.kind, `rank ${sender} ${how}`, size);
  } catch (e) {
    return { problem: `${how} broke the protocol: ${(e as Error).message}`, malformed: true };
  }
  if (m.origin < 0 || m.origin >= size || m.origin === me) return { problem: `forwarded a descriptor with origin ${m.origin}`, malformed: false };
  if (m.seq >= nextSeq + SEQ_WINDOW) return { problem: `sent a descriptor for #${m.seq}, far ahead of this rank's #${nextSeq}`, malformed: false };
  m.d = d;
  return { d };
}
