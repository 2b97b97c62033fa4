// AVX2 + F16C kernels for x86-64. Each SIMD kernel runs in three parts, all on the same element
// order and arithmetic, so the split changes no result bit:
//   head: the scalar loop of ops.h until the float32 array reaches a 32-byte boundary (at most 7
//         elements). malloc'd typed arrays are only 16-byte aligned, and then every other 32-byte
//         access splits a cache line: aligning the float side took the in-cache sum from ~30 to
//         ~38 GB/s (64 KiB, against ~45 for memcpy);
//   body: two 8-lane vectors per step, then one;
//   tail: the scalar loop again for what is left.
// The 16-bit wire side stays unaligned (`loadu`/`storeu`): chunks sit at any byte offset.
//
// The whole file between the push/pop pragmas is compiled for AVX2 + F16C, including the generic
// loops of ops.h (table.h), which the compiler auto-vectorises for the dtypes that have no
// hand-written body here. None of that code may run before cpu_has_avx2_f16c() has said yes:
// x86_avx2_kernels(), compiled for the baseline, is the only way in and checks first.
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)

// Every system header goes in before the pragma: an inline library function compiled inside the
// AVX2 region could otherwise be the copy the linker keeps for the whole addon.
#include <immintrin.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,f16c")
#endif

#include "table.h"

namespace {

/** Elements before `p` reaches a 32-byte boundary (p is 4-byte aligned), at most n. */
size_t align_head(const float* p, size_t n) {
  const size_t k = ((32 - (reinterpret_cast<uintptr_t>(p) & 31)) & 31) / sizeof(float);
  return k < n ? k : n;
}

// ---- float32 reductions ----------------------------------------------------------------------

struct VSum {
  using Scalar = SumOp;
  static __m256 apply(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
};
struct VProduct {
  using Scalar = ProductOp;
  static __m256 apply(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
};
// take b where b < a or b is NaN: exactly MinOp/MaxOp, lane by lane (vminps would not do: it
// returns its second operand whenever either is NaN, which loses a NaN already in dst).
struct VMin {
  using Scalar = MinOp;
  static __m256 apply(__m256 a, __m256 b) {
    const __m256 take = _mm256_or_ps(_mm256_cmp_ps(b, a, _CMP_LT_OQ), _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
    return _mm256_blendv_ps(a, b, take);
  }
};
struct VMax {
  using Scalar = MaxOp;
  static __m256 apply(__m256 a, __m256 b) {
    const __m256 take = _mm256_or_ps(_mm256_cmp_ps(b, a, _CMP_GT_OQ), _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
    return _mm256_blendv_ps(a, b, take);
  }
};

template <class V>
void reduce_f32(void* dst, const void* src, size_t n) {
  float* d = static_cast<float*>(dst);
  const float* s = static_cast<const float*>(src);
  size_t i = align_head(d, n);
  reduce_loop<float, typename V::Scalar>(d, s, i);
  for (; i + 16 <= n; i += 16) {
    const __m256 r0 = V::apply(_mm256_loadu_ps(d + i), _mm256_loadu_ps(s + i));
    const __m256 r1 = V::apply(_mm256_loadu_ps(d + i + 8), _mm256_loadu_ps(s + i + 8));
    _mm256_storeu_ps(d + i, r0);
    _mm256_storeu_ps(d + i + 8, r1);
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, V::apply(_mm256_loadu_ps(d + i), _mm256_loadu_ps(s + i)));
  reduce_loop<float, typename V::Scalar>(d + i, s + i, n - i);
}

// ---- max |x| ----------------------------------------------------------------------------------

// On the bits with the sign cleared, integer order is float order and Inf and the NaNs are the
// patterns from 0x7f800000 up: a lane that holds one counts as 0 (finite_abs), so a signed 32-bit
// max finds max |x| over the finite elements.
__m256i finite_abs(__m256i bits) {
  const __m256i a = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
  return _mm256_and_si256(a, _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(kInfBits)), a));
}

uint32_t max_abs_finite_f32(const float* x, size_t n) {
  __m256i m0 = _mm256_setzero_si256(), m1 = _mm256_setzero_si256();
  size_t i = align_head(x, n);
  const uint32_t head = max_abs_finite_loop(x, i, 0);
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_epi32(m0, finite_abs(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i))));
    m1 = _mm256_max_epi32(m1, finite_abs(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 8))));
  }
  m0 = _mm256_max_epi32(m0, m1);
  __m128i h = _mm_max_epi32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
  h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0xb1));
  const uint32_t body = uint32_t(_mm_cvtsi128_si32(h));
  return max_abs_finite_loop(x + i, n - i, head > body ? head : body);
}

// ---- float16 (F16C) -----------------------------------------------------------------------------

__m128i* out128(uint8_t* p) { return reinterpret_cast<__m128i*>(p); }
const __m128i* in128(const uint8_t* p) { return reinterpret_cast<const __m128i*>(p); }

template <bool kScaled>
void f32_to_f16_body(uint8_t* dst, const float* src, size_t n, float scale) {
  const __m256 vs = _mm256_set1_ps(scale);
  size_t i = align_head(src, n);
  f32_to_f16_loop<kScaled>(dst, src, i, scale);
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_loadu_ps(src + i), b = _mm256_loadu_ps(src + i + 8);
    if (kScaled) a = _mm256_mul_ps(a, vs), b = _mm256_mul_ps(b, vs);
    _mm_storeu_si128(out128(dst + 2 * i), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
    _mm_storeu_si128(out128(dst + 2 * i + 16), _mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_loadu_ps(src + i);
    if (kScaled) a = _mm256_mul_ps(a, vs);
    _mm_storeu_si128(out128(dst + 2 * i), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
  }
  f32_to_f16_loop<kScaled>(dst + 2 * i, src + i, n - i, scale);
}

// Decoders write two bytes per byte read. Once the output is far larger than the cache, the
// write-allocate read of every output line costs as much as the input: non-temporal stores skip
// it (64 MiB in, on this EPYC: 7.4 GB/s streamed vs 5.7 stored). Below that they are much slower
// (the data leaves the cache), hence a threshold on the output size. align_head makes the
// streamed addresses 32-byte aligned, as vmovntps requires.
constexpr size_t kStreamBytes = size_t(16) << 20;

template <bool kStream>
void store8(float* p, __m256 v) {
  if (kStream) _mm256_stream_ps(p, v);
  else _mm256_storeu_ps(p, v);
}

template <bool kScaled, bool kStream>
void f16_to_f32_body(float* dst, const uint8_t* src, size_t n, float scale) {
  const __m256 vs = _mm256_set1_ps(scale);
  size_t i = align_head(dst, n);
  f16_to_f32_loop<kScaled>(dst, src, i, scale);
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(in128(src + 2 * i)));
    __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(in128(src + 2 * i + 16)));
    if (kScaled) a = _mm256_mul_ps(a, vs), b = _mm256_mul_ps(b, vs);
    store8<kStream>(dst + i, a);
    store8<kStream>(dst + i + 8, b);
  }
  if (kStream) _mm_sfence();  // streamed stores are weakly ordered: publish them before returning
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(in128(src + 2 * i)));
    if (kScaled) a = _mm256_mul_ps(a, vs);
    _mm256_storeu_ps(dst + i, a);
  }
  f16_to_f32_loop<kScaled>(dst + i, src + 2 * i, n - i, scale);
}

// acc += decode(src) [* scale]: one pass over the accumulator instead of decode-then-add's two.
template <bool kScaled>
void add_f16_body(float* acc, const uint8_t* src, size_t n, float scale) {
  const __m256 vs = _mm256_set1_ps(scale);
  size_t i = align_head(acc, n);
  add_f16_loop<kScaled>(acc, src, i, scale);
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(in128(src + 2 * i)));
    __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(in128(src + 2 * i + 16)));
    if (kScaled) a = _mm256_mul_ps(a, vs), b = _mm256_mul_ps(b, vs);
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), a));
    _mm256_storeu_ps(acc + i + 8, _mm256_add_ps(_mm256_loadu_ps(acc + i + 8), b));
  }
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(in128(src + 2 * i)));
    if (kScaled) a = _mm256_mul_ps(a, vs);
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), a));
  }
  add_f16_loop<kScaled>(acc + i, src + 2 * i, n - i, scale);
}

template <bool kScaled>
uint32_t add_f16_max_body(float* acc, const uint8_t* src, size_t n, float scale) {
  const __m256 vs = _mm256_set1_ps(scale);
  __m256i m0 = _mm256_setzero_si256(), m1 = _mm256_setzero_si256();
  size_t i = align_head(acc, n);
  const uint32_t head = add_f16_max_loop<kScaled>(acc, src, i, scale, 0);
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(in128(src + 2 * i)));
    __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(in128(src + 2 * i + 16)));
    if (kScaled) a = _mm256_mul_ps(a, vs), b = _mm256_mul_ps(b, vs);
    a = _mm256_add_ps(_mm256_loadu_ps(acc + i), a);
    b = _mm256_add_ps(_mm256_loadu_ps(acc + i + 8), b);
    _mm256_storeu_ps(acc + i, a);
    _mm256_storeu_ps(acc + i + 8, b);
    m0 = _mm256_max_epi32(m0, finite_abs(_mm256_castps_si256(a)));
    m1 = _mm256_max_epi32(m1, finite_abs(_mm256_castps_si256(b)));
  }
  m0 = _mm256_max_epi32(m0, m1);
  __m128i h = _mm_max_epi32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
  h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0xb1));
  const uint32_t body = uint32_t(_mm_cvtsi128_si32(h));
  return add_f16_max_loop<kScaled>(acc + i, src + 2 * i, n - i, scale, head > body ? head : body);
}

void f32_to_f16(uint8_t* dst, const float* src, size_t n, float scale) { RR_SCALED_DISPATCH(f32_to_f16_body, dst, src, n); }
uint32_t add_f16_max(float* acc, const uint8_t* src, size_t n, float scale) { return RR_SCALED_DISPATCH(add_f16_max_body, acc, src, n); }
void f16_to_f32(float* dst, const uint8_t* src, size_t n, float scale) {
  const bool stream = n * sizeof(float) >= kStreamBytes;
  if (scale == 1.0f) {
    stream ? f16_to_f32_body<false, true>(dst, src, n, scale) : f16_to_f32_body<false, false>(dst, src, n, scale);
  } else {
    stream ? f16_to_f32_body<true, true>(dst, src, n, scale) : f16_to_f32_body<true, false>(dst, src, n, scale);
  }
}
void add_f16(float* acc, const uint8_t* src, size_t n, float scale) { RR_SCALED_DISPATCH(add_f16_body, acc, src, n); }

// ---- bfloat16 (integer AVX2) ------------------------------------------------------------------

// f32_to_bf16_bits for 8 lanes, each result in the low 16 bits of its 32-bit lane.
__m256i bf16_round(__m256i x) {
  const __m256i hi = _mm256_srli_epi32(x, 16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i quiet = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

void f32_to_bf16(uint8_t* dst, const float* src, size_t n) {
  size_t i = align_head(src, n);
  f32_to_bf16_loop(dst, src, i);
  for (; i + 16 <= n; i += 16) {
    const __m256i a = bf16_round(_mm256_castps_si256(_mm256_loadu_ps(src + i)));
    const __m256i b = bf16_round(_mm256_castps_si256(_mm256_loadu_ps(src + i + 8)));
    // packus works within 128-bit lanes (a.lo b.lo a.hi b.hi); the permute restores order.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * i), packed);
  }
  f32_to_bf16_loop(dst + 2 * i, src + i, n - i);
}

__m256 bf16_widen(const uint8_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(in128(p))), 16));
}

template <bool kStream>
void bf16_to_f32_body(float* dst, const uint8_t* src, size_t n) {
  size_t i = align_head(dst, n);
  bf16_to_f32_loop(dst, src, i);
  for (; i + 16 <= n; i += 16) {
    store8<kStream>(dst + i, bf16_widen(src + 2 * i));
    store8<kStream>(dst + i + 8, bf16_widen(src + 2 * i + 16));
  }
  if (kStream) _mm_sfence();
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, bf16_widen(src + 2 * i));
  bf16_to_f32_loop(dst + i, src + 2 * i, n - i);
}

void bf16_to_f32(float* dst, const uint8_t* src, size_t n) {
  n * sizeof(float) >= kStreamBytes ? bf16_to_f32_body<true>(dst, src, n) : bf16_to_f32_body<false>(dst, src, n);
}

void add_bf16(float* acc, const uint8_t* src, size_t n) {
  size_t i = align_head(acc, n);
  add_bf16_loop(acc, src, i);
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), bf16_widen(src + 2 * i)));
    _mm256_storeu_ps(acc + i + 8, _mm256_add_ps(_mm256_loadu_ps(acc + i + 8), bf16_widen(src + 2 * i + 16)));
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), bf16_widen(src + 2 * i)));
  add_bf16_loop(acc + i, src + 2 * i, n - i);
}

rr::KernelTable avx2_table() {
  rr::KernelTable t = generic_table("avx2+f16c");
  t.reduce[rr::kSum][rr::kF32] = reduce_f32<VSum>;
  t.reduce[rr::kMin][rr::kF32] = reduce_f32<VMin>;
  t.reduce[rr::kMax][rr::kF32] = reduce_f32<VMax>;
  t.reduce[rr::kProduct][rr::kF32] = reduce_f32<VProduct>;
  t.max_abs_finite_f32 = max_abs_finite_f32;
  t.f32_to_f16 = f32_to_f16;
  t.f16_to_f32 = f16_to_f32;
  t.add_f16 = add_f16;
  t.add_f16_max = add_f16_max;
  t.f32_to_bf16 = f32_to_bf16;
  t.bf16_to_f32 = bf16_to_f32;
  t.add_bf16 = add_bf16;
  return t;
}

}  // namespace

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

namespace rr {

const KernelTable* x86_avx2_kernels() {
  if (!cpu_has_avx2_f16c()) return nullptr;
  static const KernelTable table = avx2_table();
  return &table;
}

}  // namespace rr

#else  // not x86-64

namespace rr {
const KernelTable* x86_avx2_kernels() { return nullptr; }
}  // namespace rr

#endif
