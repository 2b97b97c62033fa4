/**
 * float16 and bfloat16 conversions in TypeScript, bit for bit what native-bindings/src/half.h
 * (and so the x86 F16C instructions) produce:
 *
 * - f32 -> f16 rounds to nearest, ties to even; |x| >= 65520 becomes ±Inf, |x| <= 2^-25 becomes
 *   ±0, values in between the subnormal range round to the nearest multiple of 2^-24. A NaN keeps
 *   its sign and top 10 payload bits and is made quiet (bit 9 set).
 * - f16 -> f32 is exact; a NaN keeps sign and payload (shifted up 13 bits) and is made quiet.
 * - f32 -> bf16 rounds to nearest even (overflow to ±Inf); a NaN keeps its top 7 payload bits and
 *   is made quiet, so a NaN whose payload sits in the dropped bits never turns into Inf.
 *
 * 16-bit words are little-endian bytes in a Uint8Array at any byte offset. When the offset is even
 * (and the host little-endian) the kernels read a Uint16Array view of the same memory; otherwise
 * they go through an aligned scratch block of BLOCK words, copied in or out with
 * TypedArray.prototype.set (a memcpy).
 */

/** f32 bits (int32 or uint32) -> f16 bits. */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const a = x & 0x7fffffff;
  if (a >= 0x7f800000) return sign | (a === 0x7f800000 ? 0x7c00 : 0x7e00 | ((a >>> 13) & 0x3ff));
  if (a >= 0x38800000) {
    // Rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a carry out
    // of the exponent lands on 0x7c00 (Inf).
    const r = (a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13;
    return sign | (r > 0x7c00 ? 0x7c00 : r);
  }
  // Subnormal half or zero: round(|x| / 2^-24) to nearest even.
  const shift = 126 - (a >>> 23);
  if (shift > 24) return sign;
  const mant = (a & 0x7fffff) | 0x800000;
  let q = mant >>> shift;
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) !== 0)) q++;
  return sign | q;
}

/** f16 bits -> f32 bits (as an int32). */
export function f16BitsToF32(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return sign | 0x7f800000 | (m << 13) | (m !== 0 ? 0x400000 : 0);
  if (e !== 0) return sign | ((e + 112) << 23) | (m << 13);
  if (m === 0) return sign;
  let p = 10;
  let mm = m;
  while ((mm & 0x400) === 0) {
    mm <<= 1;
    p--;
  }
  return sign | ((p + 103) << 23) | ((mm & 0x3ff) << 13);
}

/** f32 bits (int32 or uint32) -> bf16 bits. */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

// ---- lookup tables (built on first use: 256 KiB each) ----------------------------------------

let f16Table: { bits: Uint32Array; values: Float32Array } | undefined;
let bf16Table: Float32Array | undefined;

function f16ToF32Table(): { bits: Uint32Array; values: Float32Array } {
  if (!f16Table) {
    const bits = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) bits[h] = f16BitsToF32(h);
    f16Table = { bits, values: new Float32Array(bits.buffer) };
  }
  return f16Table;
}
function bf16ToF32Table(): Float32Array {
  if (!bf16Table) {
    const bits = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) bits[h] = h << 16;
    bf16Table = new Float32Array(bits.buffer);
  }
  return bf16Table;
}

// ---- 16-bit words at any byte offset ----------------------------------------------------------

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const BLOCK = 4096;
const scratchWords = new Uint16Array(BLOCK);
const scratchBytes = new Uint8Array(scratchWords.buffer);

/**
 * An inner loop: element `i + j` of the float side `f` pairs with word `w[at + j]`, j < count.
 * Loops are top-level functions that get everything as arguments: reading arrays from a
 * closure's context costs ~1.5x in the hot loop (measured).
 */
type Loop<F, T> = (w: Uint16Array, at: number, f: F, i: number, count: number, t: T, scale: number) => void;

function swapBytes(words: Uint16Array, count: number): void {
  for (let j = 0; j < count; j++) words[j] = ((words[j] & 0xff) << 8) | (words[j] >>> 8);
}

/** Runs `loop` over the n little-endian words in `bytes`, for reading. */
function readWords<F, T>(bytes: Uint8Array, n: number, loop: Loop<F, T>, f: F, t: T, scale: number): void {
  if (LITTLE_ENDIAN && (bytes.byteOffset & 1) === 0) {
    loop(new Uint16Array(bytes.buffer, bytes.byteOffset, n), 0, f, 0, n, t, scale);
    return;
  }
  for (let i = 0; i < n; i += BLOCK) {
    const count = Math.min(BLOCK, n - i);
    scratchBytes.set(bytes.subarray(2 * i, 2 * (i + count)));
    if (!LITTLE_ENDIAN) swapBytes(scratchWords, count);
    loop(scratchWords, 0, f, i, count, t, scale);
  }
}

/** Runs `loop` to fill the n little-endian words in `bytes`. */
function writeWords<F, T>(bytes: Uint8Array, n: number, loop: Loop<F, T>, f: F, t: T, scale: number): void {
  if (LITTLE_ENDIAN && (bytes.byteOffset & 1) === 0) {
    loop(new Uint16Array(bytes.buffer, bytes.byteOffset, n), 0, f, 0, n, t, scale);
    return;
  }
  for (let i = 0; i < n; i += BLOCK) {
    const count = Math.min(BLOCK, n - i);
    loop(scratchWords, 0, f, i, count, t, scale);
    if (!LITTLE_ENDIAN) swapBytes(scratchWords, count);
    bytes.set(scratchBytes.subarray(0, 2 * count), 2 * i);
  }
}

const bitsOf = (x: Float32Array): Int32Array => new Int32Array(x.buffer, x.byteOffset, x.length);

// ---- inner loops ----------------------------------------------------------------------------------

const encodeF16: Loop<Int32Array, null> = (w, at, x, i, count) => {
  for (let j = 0; j < count; j++) w[at + j] = f32BitsToF16(x[i + j]);
};
/** `cell` is one float32 seen as int32: it rounds x * scale to float32 and hands over the bits. */
const encodeF16Scaled: Loop<Float32Array, { f: Float32Array; i: Int32Array }> = (w, at, x, i, count, cell, scale) => {
  const cf = cell.f;
  const ci = cell.i;
  for (let j = 0; j < count; j++) {
    cf[0] = x[i + j] * scale;
    w[at + j] = f32BitsToF16(ci[0]);
  }
};
const decodeBits: Loop<Uint32Array, Uint32Array> = (w, at, out, i, count, bits) => {
  for (let j = 0; j < count; j++) out[i + j] = bits[w[at + j]];
};
const decodeScaled: Loop<Float32Array, Float32Array> = (w, at, out, i, count, values, scale) => {
  for (let j = 0; j < count; j++) out[i + j] = values[w[at + j]] * scale;
};
const addDecoded: Loop<Float32Array, Float32Array> = (w, at, acc, i, count, values) => {
  for (let j = 0; j < count; j++) acc[i + j] += values[w[at + j]];
};
const addDecodedScaled: Loop<Float32Array, Float32Array> = (w, at, acc, i, count, values, scale) => {
  for (let j = 0; j < count; j++) acc[i + j] += Math.fround(values[w[at + j]] * scale);
};
const encodeBf16: Loop<Int32Array, null> = (w, at, x, i, count) => {
  for (let j = 0; j < count; j++) w[at + j] = f32BitsToBf16(x[i + j]);
};
const widenBf16: Loop<Int32Array, null> = (w, at, out, i, count) => {
  for (let j = 0; j < count; j++) out[i + j] = w[at + j] << 16;
};

// ---- the kernels --------------------------------------------------------------------------------

const cellF = new Float32Array(1);
const cell = { f: cellF, i: new Int32Array(cellF.buffer) };

export function f32ToF16(dst: Uint8Array, src: Float32Array, scale: number): void {
  if (scale === 1) writeWords(dst, src.length, encodeF16, bitsOf(src), null, 1);
  else writeWords(dst, src.length, encodeF16Scaled, src, cell, scale);
}

export function f16ToF32(dst: Float32Array, src: Uint8Array, scale: number): void {
  const t = f16ToF32Table();
  if (scale === 1) readWords(src, dst.length, decodeBits, new Uint32Array(dst.buffer, dst.byteOffset, dst.length), t.bits, 1);
  else readWords(src, dst.length, decodeScaled, dst, t.values, scale);
}

export function addF16Into(acc: Float32Array, src: Uint8Array, scale: number): void {
  const values = f16ToF32Table().values;
  readWords(src, acc.length, scale === 1 ? addDecoded : addDecodedScaled, acc, values, scale);
}

export function f32ToBf16(dst: Uint8Array, src: Float32Array): void {
  writeWords(dst, src.length, encodeBf16, bitsOf(src), null, 1);
}

export function bf16ToF32(dst: Float32Array, src: Uint8Array): void {
  readWords(src, dst.length, widenBf16, new Int32Array(dst.buffer, dst.byteOffset, dst.length), null, 1);
}

export function addBf16Into(acc: Float32Array, src: Uint8Array): void {
  readWords(src, acc.length, addDecoded, acc, bf16ToF32Table(), 1);
}
