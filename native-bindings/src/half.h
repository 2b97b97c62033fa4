// Scalar IEEE binary16 and bfloat16 conversions, bit for bit what the x86 F16C instructions
// (vcvtps2ph with round-to-nearest-even, vcvtph2ps) produce, including NaN payloads:
//   f32 -> f16: NaN keeps its sign and the top 10 payload bits and is made quiet (bit 9 set);
//   f16 -> f32: NaN keeps its sign and payload (shifted up 13 bits) and is made quiet (bit 22 set).
// bfloat16 has no x86 instruction before AVX-512 BF16; the convention here is the same:
//   f32 -> bf16 rounds to nearest even, NaN keeps its top 7 payload bits and is made quiet.
// src/kernels/js-half.ts implements the same functions in TypeScript; the tests hold the two equal.
#pragma once

#include <cstdint>
#include <cstring>

// Internal linkage on purpose: kernels_x86.cc may compile these for AVX2 (see ops.h).
namespace rr {
namespace {

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// 16-bit words on the wire are little-endian; these compile to one load/store on LE hosts.
inline uint16_t load_le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline void store_le16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}

inline uint16_t f32_to_f16_bits(uint32_t x) {
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // Inf or NaN
    return uint16_t(sign | (a == 0x7f800000u ? 0x7c00u : 0x7e00u | ((a >> 13) & 0x3ffu)));
  }
  if (a >= 0x38800000u) {  // |x| >= 2^-14: a normal half, or overflow to Inf
    // Rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even: adding
    // 0xfff plus the lowest kept bit carries exactly when the dropped part is > half, or == half
    // with an odd kept part. A carry out of the exponent lands on 0x7c00 (Inf), as IEEE says.
    const uint32_t r = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
    return uint16_t(sign | (r > 0x7c00u ? 0x7c00u : r));
  }
  // Subnormal half or zero: the result is round(|x| / 2^-24) to nearest even.
  const uint32_t e = a >> 23;  // <= 112
  const uint32_t shift = 126 - e;  // >= 14
  if (shift > 24) return uint16_t(sign);  // |x| < 2^-25 rounds to zero (f32 subnormals included)
  const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) q++;  // q == 0x400 is the smallest normal: right
  return uint16_t(sign | q);
}

inline uint32_t f16_to_f32_bits(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u);  // Inf, quiet NaN
  if (e != 0) return sign | ((e + 112u) << 23) | (m << 13);
  if (m == 0) return sign;
  // Subnormal half m * 2^-24: normalise so the leading 1 sits at bit 10.
  uint32_t p = 10, mm = m;
  while (!(mm & 0x400u)) {
    mm <<= 1;
    p--;
  }
  return sign | ((p + 103u) << 23) | ((mm & 0x3ffu) << 13);
}

inline uint16_t f32_to_bf16_bits(uint32_t x) {
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline uint32_t bf16_to_f32_bits(uint16_t b) { return uint32_t(b) << 16; }

}  // namespace
}  // namespace rr
