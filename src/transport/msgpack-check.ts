/**
 * A structural check of a MessagePack value, run on every control message before msgpackr sees it.
 *
 * msgpackr decodes far more than plain data: record definitions (which it caches across messages
 * and compiles into functions), structured-clone references (cycles), Error / RegExp / Set / Date
 * extensions, 64-bit integers as BigInt — and it recurses once per nesting level, so a message of
 * nested one-element arrays overflows the stack. None of that appears in ringreduce's own
 * messages, and any of it can reach code that expects plain data (JSON.stringify of a BigInt or a
 * cycle throws). So a message is accepted only if it is made of:
 *
 *   nil, booleans, integers up to 32 bits, float32/float64, strings, binary,
 *   arrays, maps whose keys are strings (none of __proto__, constructor, prototype),
 *   and msgpackr's encoding of `undefined` (fixext 1, type 0),
 *
 * nested at most MAX_DEPTH deep, at most MAX_VALUES values in all, maps of at most MAX_MAP_ENTRIES
 * entries, with nothing after the value. The walk is iterative (a hostile depth cannot overflow
 * the stack) and linear in the bytes. No message of ringreduce's has more than a dozen fields, so
 * a wide map is only ever hostile, and it is the costliest thing to decode: a 1 MB map of 120,000
 * keys took msgpackr 65 ms, the same bytes as an array 5 ms.
 */
export const MAX_DEPTH = 32;
export const MAX_VALUES = 1 << 18;
export const MAX_MAP_ENTRIES = 64;

const FORBIDDEN_KEYS = ['__proto__', 'constructor', 'prototype'].map((k) => Buffer.from(k));

/** The forbidden key that `b[p..p+n)` spells, if any (compared as bytes: no string per key). */
function forbiddenKey(b: Uint8Array, p: number, n: number): string | undefined {
  for (const k of FORBIDDEN_KEYS) {
    if (k.length !== n) continue;
    let i = 0;
    while (i < n && b[p + i] === k[i]) i++;
    if (i === n) return k.toString();
  }
  return undefined;
}

/**
 * Returns what is wrong with the MessagePack value in `b[start..]` (or, with `howMany`, the
 * values one after the other that fill it), or undefined if it is acceptable. `maxValues` bounds
 * the values in all (a caller that decodes large data of its own may allow more).
 */
export function checkMsgpack(b: Uint8Array, start = 0, howMany = 1, maxValues = MAX_VALUES): string | undefined {
  const end = b.byteLength;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = start;
  // Per open container: values still to read (a map of n entries holds 2n: key, value, ...).
  const left: number[] = [howMany];
  const isMap: boolean[] = [false];
  let values = 0;
  while (left.length > 0) {
    const d = left.length - 1;
    if (left[d] === 0) {
      left.pop();
      isMap.pop();
      continue;
    }
    const isKey = isMap[d] && left[d] % 2 === 0;
    left[d]--;
    if (++values > maxValues) return `more than ${maxValues} values`;
    if (p >= end) return `truncated at byte ${p}`;
    const t = b[p++];
    // Byte lengths that follow the type byte (str/bin), or element counts (array/map).
    let bytes = -1;
    let count = -1;
    let map = false;
    let str = false;
    if (t <= 0x7f || t >= 0xe0) bytes = 0; // fixint
    else if (t <= 0x8f) (count = t & 0x0f), (map = true);
    else if (t <= 0x9f) count = t & 0x0f;
    else if (t <= 0xbf) (bytes = t & 0x1f), (str = true);
    else {
      switch (t) {
        case 0xc0: case 0xc2: case 0xc3:
          bytes = 0;
          break;
        case 0xc4: case 0xd9:
          if (p + 1 > end) return `truncated at byte ${p}`;
          bytes = b[p++];
          str = t === 0xd9;
          break;
        case 0xc5: case 0xda:
          if (p + 2 > end) return `truncated at byte ${p}`;
          bytes = dv.getUint16(p);
          p += 2;
          str = t === 0xda;
          break;
        case 0xc6: case 0xdb:
          if (p + 4 > end) return `truncated at byte ${p}`;
          bytes = dv.getUint32(p);
          p += 4;
          str = t === 0xdb;
          break;
        case 0xcc: case 0xd0:
          bytes = 1;
          break;
        case 0xcd: case 0xd1:
          bytes = 2;
          break;
        case 0xca: case 0xce: case 0xd2:
          bytes = 4;
          break;
        case 0xcb:
          bytes = 8;
          break;
        case 0xd4:
          // msgpackr writes `undefined` as fixext 1 of type 0; no other extension is accepted.
          if (p + 2 > end) return `truncated at byte ${p}`;
          if (b[p] !== 0) return `extension type ${b[p]} at byte ${p - 1}`;
          bytes = 2;
          break;
        case 0xdc: case 0xde:
          if (p + 2 > end) return `truncated at byte ${p}`;
          count = dv.getUint16(p);
          p += 2;
          map = t === 0xde;
          break;
        case 0xdd: case 0xdf:
          if (p + 4 > end) return `truncated at byte ${p}`;
          count = dv.getUint32(p);
          p += 4;
          map = t === 0xdf;
          break;
        case 0xcf: case 0xd3:
          return `64-bit integer at byte ${p - 1}`;
        default:
          return `type byte 0x${t.toString(16)} at byte ${p - 1}`;
      }
    }
    if (isKey) {
      if (!str) return `map key at byte ${p - 1} is not a string`;
      const forbidden = bytes <= 11 && p + bytes <= end ? forbiddenKey(b, p, bytes) : undefined;
      if (forbidden) return `forbidden map key '${forbidden}'`;
    }
    if (bytes >= 0) {
      if (p + bytes > end) return `a ${bytes}-byte value at byte ${p} runs past the end (${end} bytes)`;
      p += bytes;
      continue;
    }
    if (map && count > MAX_MAP_ENTRIES) return `a map of ${count} entries at byte ${p} (at most ${MAX_MAP_ENTRIES})`;
    const slots = map ? count * 2 : count;
    // Every value takes at least one byte: a count larger than what is left is a lie.
    if (slots > end - p) return `a ${map ? 'map' : 'array'} of ${count} at byte ${p} runs past the end (${end} bytes)`;
    if (slots === 0) continue;
    if (left.length >= MAX_DEPTH) return `nested deeper than ${MAX_DEPTH}`;
    left.push(slots);
    isMap.push(map);
  }
  if (p !== end) return `${end - p} bytes after the value`;
  return undefined;
}
