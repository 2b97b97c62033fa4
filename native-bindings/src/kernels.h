// The kernel table every instruction-set variant fills in. addon.cc picks one table at load time
// (select_kernels) and never looks at the CPU again.
//
// Pointers are element-aligned for float/int arrays (JS typed arrays guarantee it); 16-bit wire
// data (`uint8_t*`, little-endian words) may sit at any byte offset, odd ones included.
// Arguments have been checked by the caller: lengths match, views do not partially overlap.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rr {

enum Op { kSum = 0, kMin = 1, kMax = 2, kProduct = 3, kOpCount = 4 };
enum DType { kF32 = 0, kF64, kI32, kU32, kI16, kU16, kI8, kU8, kDTypeCount };

using ReduceFn = void (*)(void* dst, const void* src, size_t n);

struct KernelTable {
  const char* isa;
  // dst[i] = op(dst[i], src[i]); integer sum/product wrap; min/max propagate NaN from either side.
  ReduceFn reduce[kOpCount][kDTypeCount];
  // x[i] = x[i] / d and x[i] = x[i] * f, with the result of the double operation rounded once to
  // the element type (for float32 and a float32-exact factor, float32 arithmetic gives just that).
  void (*divide_f32)(float* x, size_t n, double d);
  void (*divide_f64)(double* x, size_t n, double d);
  void (*scale_f32)(float* x, size_t n, double f);
  void (*scale_f64)(double* x, size_t n, double f);
  // Bits of max |x[i]| over the finite x[i] (0 when there are none): Inf and NaN are left out, so
  // that one of them does not set the fp16 scale of a whole chunk.
  uint32_t (*max_abs_finite_f32)(const float* x, size_t n);
  // dst = f16(src * scale); dst = f32(src) * scale; acc += f32(src) * scale. scale == 1 skips
  // the multiply (x * 1 == x for every non-NaN float, and NaN stays NaN either way).
  void (*f32_to_f16)(uint8_t* dst, const float* src, size_t n, float scale);
  void (*f16_to_f32)(float* dst, const uint8_t* src, size_t n, float scale);
  void (*add_f16)(float* acc, const uint8_t* src, size_t n, float scale);
  // add_f16, returning the bits of max |acc[i]| over the finite acc[i] after it (as max_abs_finite_f32 would).
  uint32_t (*add_f16_max)(float* acc, const uint8_t* src, size_t n, float scale);
  void (*f32_to_bf16)(uint8_t* dst, const float* src, size_t n);
  void (*bf16_to_f32)(float* dst, const uint8_t* src, size_t n);
  void (*add_bf16)(float* acc, const uint8_t* src, size_t n);
};

// Plain C++ (the compiler may auto-vectorise it for the baseline ISA). Every platform has it.
const KernelTable& portable_kernels();
// AVX2 + F16C bodies; nullptr when this build is not x86-64.
const KernelTable* x86_avx2_kernels();
// True when the CPU (and the OS, for the YMM state) supports AVX2 and F16C.
bool cpu_has_avx2_f16c();

}  // namespace rr
