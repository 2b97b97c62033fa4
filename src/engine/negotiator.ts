import { Packr } from 'msgpackr';
import type { Compression } from '../compression/registry.js';
import { RingError, RingMismatchError, RingProtocolError, serializeError, type SerializedRingError } from '../errors.js';
import type { RingGroup } from '../group.js';
import { scaleInPlace } from '../kernels/index.js';
import { stderrLogger } from '../logger.js';
import { checkMsgpack } from '../transport/msgpack-check.js';
import type { GroupEntry } from './messages.js';
import { decide, validateLists, type GroupMeta } from './plan.js';

/** A submitted gradient group while the comm thread has it. */
export interface Pending {
  id: number;
  buffer: SharedArrayBuffer;
  control: Int32Array;
  entries: GroupEntry[];
  meta: GroupMeta;
  sync: boolean;
  submittedAt: number;
  warned: boolean;
}

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

/**
 * The gradient reduction of one set of ranks (the world, or a process set a DistributedOptimizer
 * was given): turns submitted gradient groups into fused all-reduces on `ring`.
 *
 * Each negotiation round all-gathers every rank's list of pending groups; `decide` (a pure
 * function, so all ranks agree) matches them by tensor names, and matched groups are packed into
 * fusion buffers of at most `fusionBytes` and reduced. A rank takes part in a round when it has
 * pending groups and either something new was submitted or the previous round made progress —
 * so rounds never spin, and a rank that never submits shows up in the stall warning instead.
 * Ranks are named by their world rank in every message (`members`: group rank -> world rank).
 */
export class Negotiator {
  private readonly pending: Pending[] = [];
  private newSinceRound = false;
  private lastRoundProgressed = false;
  private inRound = false;
  private round = 0;
  /** Which ranks (world) had each tensor pending in the last round (for stall warnings). */
  private lastSeen = new Map<string, number[]>();
  private fusion = new Float32Array(0);
  private fatal: SerializedRingError | undefined;

  constructor(
    private readonly ring: RingGroup,
    private readonly members: number[],
    private readonly o: { fusionBytes: number; stallWarningMs: number },
    private readonly reply: (p: Pending, error?: SerializedRingError) => void,
    /** A failure of this set's ring: every pending group has been answered with it. */
    private readonly onFatal: (error: SerializedRingError) => void,
  ) {}

  private get me(): number {
    return this.members[this.ring.rank];
  }

  submit(p: Pending): void {
    if (this.fatal) return this.reply(p, this.fatal);
    this.pending.push(p);
    this.newSinceRound = true;
    this.kick();
  }

  /** Answers every pending group with `err` and refuses later ones. */
  fail(e: unknown): void {
    const err = e instanceof RingError ? serializeError(e) : { code: 'RING_ERR_INTERNAL' as const, message: String((e as Error)?.stack ?? e), details: {} };
    this.fatal = err;
    for (const p of this.pending.splice(0)) this.reply(p, err);
    this.onFatal(err);
  }

  private kick(): void {
    if (this.inRound || this.fatal || this.pending.length === 0) return;
    if (!this.newSinceRound && !this.lastRoundProgressed) return;
    this.inRound = true;
    this.newSinceRound = false;
    this.negotiate().then(
      () => {
        this.inRound = false;
        this.kick();
      },
      (e) => {
        this.inRound = false;
        this.fail(e);
      },
    );
  }

  private async negotiate(): Promise<void> {
    const mine = this.pending.slice();
    const round = ++this.round;
    const encoded = packr.pack(mine.map((p) => p.meta));
    const gathered = await this.ring.allgather(new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength), { name: 'engine:negotiate' });
    const lists = this.splitLists(gathered);
    const seen = new Map<string, number[]>();
    lists.forEach((l, r) => l.forEach((g) => g.tensors.forEach((t) => seen.set(t.name, [...(seen.get(t.name) ?? []), this.members[r]]))));
    this.lastSeen = seen;
    const d = decide(lists, (r) => this.members[r]);
    this.lastRoundProgressed = d.matched.length > 0 || d.errors.length > 0;
    const me = this.ring.rank;
    const done = new Set<Pending>();
    for (const err of d.errors) {
      const p = mine[err.indices[me]];
      const e = new RingMismatchError(`rank ${this.me}: gradient negotiation round ${round}: ${err.message}`, {
        rank: this.me,
        ranks: err.ranks,
        op: 'allreduce',
        field: err.field,
      });
      this.reply(p, serializeError(e));
      done.add(p);
    }
    // Fuse matched groups (in rank 0's order) into buffers of at most fusionBytes.
    let batch: Pending[] = [];
    let bytes = 0;
    const flush = async () => {
      if (batch.length) await this.reduceBatch(batch);
      batch = [];
      bytes = 0;
    };
    for (const idx of d.matched) {
      const p = mine[idx[me]];
      const b = p.entries.reduce((s, e) => s + e.count * 4, 0);
      const compatible = batch.length === 0 || sameReduction(batch[0].meta, p.meta);
      if (!compatible || (bytes > 0 && bytes + b > this.o.fusionBytes)) await flush();
      batch.push(p);
      bytes += b;
      if (this.o.fusionBytes === 0) await flush();
    }
    await flush();
    for (const p of mine) if (done.has(p) || p.control[0] !== 0) this.pending.splice(this.pending.indexOf(p), 1);
  }

  /**
   * msgpack values are self-delimiting: the all-gathered bytes decode to one list per rank. They
   * come from the other ranks, so they are checked as every control message is: plain data only
   * (msgpack-check.ts) before decoding, then field by field (validateLists).
   */
  private splitLists(bytes: Uint8Array): GroupMeta[][] {
    const size = this.ring.size;
    // Every value takes a byte at least: the walk is linear in the bytes, whatever their count.
    const problem = checkMsgpack(bytes, 0, size, bytes.byteLength);
    if (problem) throw new RingProtocolError(`rank ${this.me}: protocol error: gradient negotiation: the ranks' lists are malformed: ${problem}`, { rank: this.me });
    const out = packr.unpackMultiple(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)) as unknown[];
    if (out.length !== size) throw new RingProtocolError(`negotiation: expected ${size} lists, got ${out.length}`);
    return validateLists(out, this.me);
  }

  private async reduceBatch(batch: Pending[]): Promise<void> {
    const meta = batch[0].meta;
    const op = meta.op === 'average' ? 'average' : 'sum';
    const countOf = (p: Pending) => p.entries.reduce((t, e) => t + e.count, 0);
    let data: Float32Array;
    const single = batch.length === 1;
    if (single) {
      data = new Float32Array(batch[0].buffer, 0, countOf(batch[0]));
    } else {
      const total = batch.reduce((s, p) => s + countOf(p), 0);
      if (this.fusion.length < total) this.fusion = new Float32Array(total);
      data = this.fusion.subarray(0, total);
      let o = 0;
      for (const p of batch) {
        data.set(new Float32Array(p.buffer, 0, countOf(p)), o);
        o += countOf(p);
      }
    }
    if (meta.prescale !== 1) scaleInPlace(data, meta.prescale);
    try {
      await this.ring.allreduce(data, { op, inPlace: true, name: 'engine:fused', compression: meta.compression as Compression });
    } catch (e) {
      const err = e instanceof RingError ? serializeError(e) : serializeError(new RingMismatchError(String(e), {}));
      for (const p of batch) this.reply(p, err);
      throw e;
    }
    if (meta.postscale !== 1) scaleInPlace(data, meta.postscale);
    if (!single) {
      let o = 0;
      for (const p of batch) {
        const dst = new Float32Array(p.buffer, 0, countOf(p));
        dst.set(data.subarray(o, o + dst.length));
        o += dst.length;
      }
    }
    for (const p of batch) this.reply(p);
  }

  checkStalls(): void {
    const now = Date.now();
    for (const p of this.pending) {
      if (p.warned || now - p.submittedAt < this.o.stallWarningMs) continue;
      p.warned = true;
      const names = p.meta.tensors.map((t) => t.name);
      const missing = new Set<number>();
      for (const n of names) {
        const seen = this.lastSeen.get(n) ?? [this.me];
        for (const r of this.members) if (!seen.includes(r)) missing.add(r);
      }
      stderrLogger.warn(
        `rank ${this.me}: stall: ${names.length} tensor(s) submitted ${((now - p.submittedAt) / 1000).toFixed(0)} s ago are still waiting ` +
          `(${names.slice(0, 5).join(', ')}${names.length > 5 ? ', ...' : ''}); ` +
          (missing.size
            ? `as of negotiation round ${this.round}, rank(s) ${[...missing].sort((a, b) => a - b).join(', ')} had not submitted them`
            : `every rank had submitted them as of round ${this.round}; waiting for a rank to join the next round`),
      );
    }
  }
}

function sameReduction(a: GroupMeta, b: GroupMeta): boolean {
  return a.op === b.op && a.compression === b.compression && a.prescale === b.prescale && a.postscale === b.postscale;
}
