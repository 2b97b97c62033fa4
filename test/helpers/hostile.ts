import { mulberry32 } from '../../src/prng.js';

/**
 * Deterministic hostile inputs for the fuzz tests: a seeded PRNG, a tiny MessagePack encoder that
 * can write what msgpackr never would (any key, raw bytes anywhere), a pool of hostile values, and
 * mutators for data frames and control messages.
 */

/** Draws from mulberry32 (src/prng.ts): the same sequence for the same seed everywhere. */
export function prng(seed: number) {
  const next = mulberry32(seed);
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: <T>(xs: readonly T[]): T => xs[int(xs.length)], chance: (p: number) => next() < p };
}
export type Rng = ReturnType<typeof prng>;

/** Bytes spliced verbatim into an encoding. */
export class Raw {
  constructor(readonly bytes: Uint8Array) {}
}
/** A map with explicit entries: keys may be anything, repeated, or '__proto__'. */
export class Entries {
  constructor(readonly entries: Array<[unknown, unknown]>) {}
}

/** MessagePack encoding of `v` (ints as int32/uint32, other numbers as float64). */
export function mp(v: unknown): Buffer {
  const out: Buffer[] = [];
  const head = (small: number, n: number, b8: number, b16: number, b32: number) => {
    if (small >= 0 && n < 16) out.push(Buffer.from([small | n]));
    else if (b8 >= 0 && n < 256) out.push(Buffer.from([b8, n]));
    else if (n < 65536) out.push(Buffer.from([b16, n >> 8, n & 255]));
    else {
      const b = Buffer.alloc(5);
      b[0] = b32;
      b.writeUInt32BE(n, 1);
      out.push(b);
    }
  };
  const enc = (x: unknown): void => {
    if (x instanceof Raw) out.push(Buffer.from(x.bytes));
    else if (x === null) out.push(Buffer.from([0xc0]));
    else if (x === undefined) out.push(Buffer.from([0xd4, 0, 0]));
    else if (x === true || x === false) out.push(Buffer.from([x ? 0xc3 : 0xc2]));
    else if (typeof x === 'number') {
      const b = Buffer.alloc(9);
      if (Number.isInteger(x) && x >= -(2 ** 31) && x < 2 ** 31 && !Object.is(x, -0)) {
        b[0] = 0xd2;
        b.writeInt32BE(x, 1);
        out.push(b.subarray(0, 5));
      } else {
        b[0] = 0xcb;
        b.writeDoubleBE(x, 1);
        out.push(b);
      }
    } else if (typeof x === 'bigint') {
      const b = Buffer.alloc(9);
      b[0] = 0xd3;
      b.writeBigInt64BE(BigInt.asIntN(64, x), 1);
      out.push(b);
    } else if (typeof x === 'string') {
      const s = Buffer.from(x);
      if (s.length < 32) out.push(Buffer.from([0xa0 | s.length]));
      else head(-1, s.length, 0xd9, 0xda, 0xdb);
      out.push(s);
    } else if (x instanceof Uint8Array) {
      head(-1, x.length, 0xc4, 0xc5, 0xc6);
      out.push(Buffer.from(x));
    } else if (Array.isArray(x)) {
      head(0x90, x.length, -1, 0xdc, 0xdd);
      x.forEach(enc);
    } else if (x instanceof Entries) {
      head(0x80, x.entries.length, -1, 0xde, 0xdf);
      for (const [k, val] of x.entries) (enc(k), enc(val));
    } else if (typeof x === 'object') {
      const keys = Object.keys(x as object);
      head(0x80, keys.length, -1, 0xde, 0xdf);
      for (const k of keys) (enc(k), enc((x as Record<string, unknown>)[k]));
    } else throw new Error(`mp: cannot encode ${typeof x}`);
  };
  enc(v);
  return Buffer.concat(out);
}

const deep = (depth: number, open: number) => new Raw(Buffer.concat([Buffer.alloc(depth, open), Buffer.from([0xc0])]));
/** [[[[...null...]]]], 5000 deep. */
export const DEEP_ARRAY = deep(5000, 0x91);
/** An array header claiming 2^32-1 elements, and none of them. */
export const HUGE_ARRAY = new Raw(Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]));

/** Values no field of any message may hold (in some field they are merely wrong, never fatal). */
export const HOSTILE: readonly unknown[] = [
  undefined, null, true, false, 0, -1, -0, 0.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53, -(2 ** 53),
  Number.MAX_VALUE, 2n ** 62n, -1n,
  '', 'x', '0', '1', 'constructor', '__proto__', 'prototype', 'toString', 'hasOwnProperty', 'RING_ERR_PROTOCOL', 'desc',
  'x'.repeat(5000), [], [1, 2, 3], [[[]]], {}, { a: 1 }, Buffer.alloc(0), Buffer.alloc(32, 7),
  new Entries([['__proto__', { polluted: 1 }]]),
  new Entries([['constructor', { prototype: { polluted: 1 } }]]),
  new Entries([['prototype', { polluted: 1 }]]),
  { constructor: { prototype: { polluted: 1 } } },
  new Entries([[1, 2]]),
  new Entries([[[1], 2]]),
  new Entries([['a', 1], ['a', 2]]),
  DEEP_ARRAY,
  deep(5000, 0x81), // {?: {?: ...}} with nil keys: invalid keys and deep
  HUGE_ARRAY,
  new Raw(Buffer.from([0xdf, 0x7f, 0xff, 0xff, 0xff])), // map of 2^31-1, no entries
  new Raw(Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xf0, 0x61])), // str32 past the end
  new Raw(Buffer.from([0xc6, 0x7f, 0xff, 0xff, 0xff])), // bin32 past the end
  new Raw(Buffer.from([0xc1])), // never-used type byte
  new Raw(Buffer.from([0xd4, 0x72, 0x40])), // msgpackr record definition
  new Raw(Buffer.from([0xd6, 0x69, 0, 0, 0, 1, 0x91, 0xd6, 0x70, 0, 0, 0, 1])), // structured-clone cycle
  new Raw(Buffer.from([0xd4, 0x65, 0x00])), // Error extension
  new Raw(Buffer.from([0xc7, 0x03, 0x78, 0x92, 0xa1, 0x61])), // RegExp extension, truncated
  new Raw(Buffer.from([0xd5, 0x42, 0x7f, 0xff])), // BigInt extension
  new Raw(Buffer.from([0xd6, 0xff, 0, 0, 0, 0])), // timestamp
  new Raw(Buffer.from([0xcf, 0, 0, 0, 0, 0, 0, 0, 1])), // uint64
  new Raw(Buffer.from([0xd7, 0x74, 1, 2, 3, 4, 5, 6, 7, 8])), // typed-array extension
];

/** Mutates a MessagePack-able message: replace, delete or add a field (at any depth), or change its type. */
export function mutateObject(rng: Rng, msg: Record<string, unknown>): unknown {
  const copy = structuredClone(msg) as Record<string, unknown>;
  // Collect paths to plain-object fields.
  const paths: Array<[Record<string, unknown>, string]> = [];
  const walk = (o: Record<string, unknown>) => {
    for (const k of Object.keys(o)) {
      paths.push([o, k]);
      const v = o[k];
      if (v && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array)) walk(v as Record<string, unknown>);
    }
  };
  walk(copy);
  if (paths.length === 0) return rng.pick(HOSTILE);
  const [obj, key] = rng.pick(paths);
  switch (rng.int(5)) {
    case 0:
    case 1:
      obj[key] = rng.pick(HOSTILE);
      return copy;
    case 2:
      delete obj[key];
      return copy;
    case 3: {
      // An extra key: harmless names, or the prototype ones (encoded with Entries to keep them as keys).
      const extra = rng.pick(['extra', '__proto__', 'constructor', 'prototype', 't', 'x'.repeat(300)]);
      const entries: Array<[unknown, unknown]> = Object.entries(copy);
      entries.push([extra, rng.pick(HOSTILE)]);
      return new Entries(entries);
    }
    default:
      // Not an object at all.
      return rng.pick([null, 7, 'desc', [copy], Buffer.from('x'), [], copy.t]);
  }
}

/** Byte-level damage: flip, overwrite, truncate, extend, splice random bytes. */
export function mutateBytes(rng: Rng, buf: Uint8Array, from = 0): Buffer {
  const b = Buffer.from(buf);
  const pos = from + rng.int(Math.max(1, b.length - from));
  switch (rng.int(6)) {
    case 0:
      if (pos < b.length) b[pos] ^= 1 << rng.int(8);
      return b;
    case 1:
      if (pos < b.length) b[pos] = rng.int(256);
      return b;
    case 2:
      return b.subarray(0, rng.int(b.length));
    case 3:
      return Buffer.concat([b, Buffer.from(Array.from({ length: 1 + rng.int(16) }, () => rng.int(256)))]);
    case 4:
      return Buffer.concat([b.subarray(0, pos), Buffer.from(Array.from({ length: 1 + rng.int(8) }, () => rng.int(256))), b.subarray(pos)]);
    default:
      return Buffer.from(Array.from({ length: rng.int(64) }, () => rng.int(256)));
  }
}

/** Object.prototype and friends as they are now; `check()` throws if anything was added or changed. */
export function prototypeGuard() {
  const protos = [Object.prototype, Array.prototype, Function.prototype, Error.prototype, Buffer.prototype, Uint8Array.prototype];
  const snap = protos.map((p) => new Map(Reflect.ownKeys(p).map((k) => [k, Object.getOwnPropertyDescriptor(p, k)!.value])));
  return {
    check(): void {
      const probe = {} as Record<string, unknown>;
      if (probe.polluted !== undefined || ([] as unknown as Record<string, unknown>).polluted !== undefined) throw new Error('prototype polluted');
      protos.forEach((p, i) => {
        const keys = Reflect.ownKeys(p);
        if (keys.length !== snap[i].size) throw new Error(`prototype ${i} gained or lost keys: ${keys.filter((k) => !snap[i].has(k)).map(String)}`);
        for (const k of keys) {
          if (Object.getOwnPropertyDescriptor(p, k)!.value !== snap[i].get(k)) throw new Error(`prototype ${i}: ${String(k)} changed`);
        }
      });
    },
  };
}
