// Element-wise operations and the generic loops built from them. Everything here has internal
// linkage (anonymous namespace): kernels_x86.cc includes this file inside a region compiled for
// AVX2, and that copy must never be merged by the linker with the baseline copy that
// kernels_portable.cc uses, or a CPU without AVX2 could end up running AVX2 code.
//
// Float results must be bit-identical to the TypeScript kernels, which compute in double and
// round once to float32. For +, * of two floats that is the same as float arithmetic (double
// holds the exact product and rounds a sum innocuously), so the loops use plain float ops; the
// build has -ffp-contract=off so a multiply and an add never fuse into an FMA.
#pragma once

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "half.h"

static_assert(FLT_EVAL_METHOD == 0, "float expressions must be evaluated in float (no x87 excess precision)");

namespace {

template <class T>
using Wide = std::conditional_t<std::is_floating_point_v<T>, T, uint32_t>;

struct SumOp {
  // Integers add in uint32 and truncate: the wrap-around of the element type, without UB.
  template <class T>
  static T apply(T a, T b) { return T(Wide<T>(a) + Wide<T>(b)); }
};
struct ProductOp {
  template <class T>
  static T apply(T a, T b) { return T(Wide<T>(a) * Wide<T>(b)); }
};
// The TypeScript reference: `if (b < a || b !== b) dst = b`. A NaN already in dst stays, since
// no comparison with it is true; so NaN propagates from either side, and min(+0, -0) keeps dst.
struct MinOp {
  template <class T>
  static T apply(T a, T b) { return (b < a || b != b) ? b : a; }
};
struct MaxOp {
  template <class T>
  static T apply(T a, T b) { return (b > a || b != b) ? b : a; }
};

template <class T, class Op>
void reduce_loop(void* dst, const void* src, size_t n) {
  T* d = static_cast<T*>(dst);
  const T* s = static_cast<const T*>(src);
  for (size_t i = 0; i < n; i++) d[i] = Op::apply(d[i], s[i]);
}

template <class T>
void divide_loop(T* x, size_t n, double d) {
  for (size_t i = 0; i < n; i++) x[i] = T(double(x[i]) / d);
}
template <class T>
void scale_loop(T* x, size_t n, double f) {
  for (size_t i = 0; i < n; i++) x[i] = T(double(x[i]) * f);
}

// float32 x by a factor that is itself a float32 (a power of two, 1/size for a power-of-two size,
// a codec scale): plain float32 arithmetic gives the same bits as double-then-round, and runs at
// twice the width. For *, the double product of two floats is exact; for /, rounding to double and
// then to float is innocuous (53 >= 2*24 + 2). Other factors keep the double loop.
void divide_f32_any(float* x, size_t n, double d) {
  const float df = float(d);
  if (double(df) != d) return divide_loop<float>(x, n, d);
  for (size_t i = 0; i < n; i++) x[i] = x[i] / df;
}
void scale_f32_any(float* x, size_t n, double f) {
  const float ff = float(f);
  if (double(ff) != f) return scale_loop<float>(x, n, f);
  for (size_t i = 0; i < n; i++) x[i] = x[i] * ff;
}

// With the sign cleared, integer order is float order, and the patterns from 0x7f800000 up are
// Inf and the NaNs: those are left out, so that one non-finite element does not set the scale of
// a whole chunk (its finite elements would all be encoded unscaled, and overflow or flush to 0).
constexpr uint32_t kInfBits = 0x7f800000u;

uint32_t max_abs_finite_loop(const float* x, size_t n, uint32_t m) {
  for (size_t i = 0; i < n; i++) {
    const uint32_t a = rr::bits_of(x[i]) & 0x7fffffffu;
    m = a > m && a < kInfBits ? a : m;
  }
  return m;
}

uint32_t max_abs_finite_any(const float* x, size_t n) { return max_abs_finite_loop(x, n, 0); }

// Conversions one element at a time: the portable kernels, and the tails of the SIMD ones.
template <bool kScaled>
void f32_to_f16_loop(uint8_t* dst, const float* src, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) {
    const float v = kScaled ? src[i] * scale : src[i];
    rr::store_le16(dst + 2 * i, rr::f32_to_f16_bits(rr::bits_of(v)));
  }
}
template <bool kScaled>
void f16_to_f32_loop(float* dst, const uint8_t* src, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) {
    const float v = rr::float_of(rr::f16_to_f32_bits(rr::load_le16(src + 2 * i)));
    dst[i] = kScaled ? v * scale : v;
  }
}
template <bool kScaled>
void add_f16_loop(float* acc, const uint8_t* src, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) {
    const float v = rr::float_of(rr::f16_to_f32_bits(rr::load_le16(src + 2 * i)));
    acc[i] += kScaled ? v * scale : v;
  }
}
// acc += decode(src) [* scale], returning the bits of max |acc| over the finite results (as
// max_abs_finite): the all-reduce encodes the sum next and needs that max for the scale, which
// saves a pass over it.
template <bool kScaled>
uint32_t add_f16_max_loop(float* acc, const uint8_t* src, size_t n, float scale, uint32_t m) {
  for (size_t i = 0; i < n; i++) {
    const float v = rr::float_of(rr::f16_to_f32_bits(rr::load_le16(src + 2 * i)));
    acc[i] += kScaled ? v * scale : v;
    const uint32_t a = rr::bits_of(acc[i]) & 0x7fffffffu;
    m = a > m && a < kInfBits ? a : m;
  }
  return m;
}
void f32_to_bf16_loop(uint8_t* dst, const float* src, size_t n) {
  for (size_t i = 0; i < n; i++) rr::store_le16(dst + 2 * i, rr::f32_to_bf16_bits(rr::bits_of(src[i])));
}
void bf16_to_f32_loop(float* dst, const uint8_t* src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = rr::float_of(rr::bf16_to_f32_bits(rr::load_le16(src + 2 * i)));
}
void add_bf16_loop(float* acc, const uint8_t* src, size_t n) {
  for (size_t i = 0; i < n; i++) acc[i] += rr::float_of(rr::bf16_to_f32_bits(rr::load_le16(src + 2 * i)));
}

// Scale == 1 is the common case (no per-chunk scale): pick the loop without the multiply.
#define RR_SCALED_DISPATCH(body, ...) \
  (scale == 1.0f ? body<false>(__VA_ARGS__, scale) : body<true>(__VA_ARGS__, scale))

void f32_to_f16_any(uint8_t* dst, const float* src, size_t n, float scale) {
  RR_SCALED_DISPATCH(f32_to_f16_loop, dst, src, n);
}
void f16_to_f32_any(float* dst, const uint8_t* src, size_t n, float scale) {
  RR_SCALED_DISPATCH(f16_to_f32_loop, dst, src, n);
}
void add_f16_any(float* acc, const uint8_t* src, size_t n, float scale) {
  RR_SCALED_DISPATCH(add_f16_loop, acc, src, n);
}
uint32_t add_f16_max_any(float* acc, const uint8_t* src, size_t n, float scale) {
  return scale == 1.0f ? add_f16_max_loop<false>(acc, src, n, scale, 0) : add_f16_max_loop<true>(acc, src, n, scale, 0);
}

// A table row: one reduce loop per dtype, in DType order.
template <class Op>
constexpr rr::ReduceFn kReduceRow[rr::kDTypeCount] = {
    reduce_loop<float, Op>,   reduce_loop<double, Op>,  reduce_loop<int32_t, Op>, reduce_loop<uint32_t, Op>,
    reduce_loop<int16_t, Op>, reduce_loop<uint16_t, Op>, reduce_loop<int8_t, Op>,  reduce_loop<uint8_t, Op>,
};

}  // namespace
