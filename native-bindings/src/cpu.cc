// Run-time CPU check for the AVX2 + F16C kernels. No file of this addon is compiled with a global
// -mavx2/-march: the AVX2 code lives behind a target pragma in kernels_x86.cc and runs only when
// this returns true, so the same binary works on CPUs without AVX2 (it uses the portable table).
#include "kernels.h"

#if defined(_MSC_VER) && defined(_M_X64)
#include <immintrin.h>
#include <intrin.h>
#endif

namespace rr {

bool cpu_has_avx2_f16c() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // libgcc/compiler-rt report avx2 and f16c only when the OS also saves the YMM registers
  // (OSXSAVE + XGETBV), which is the other half of "AVX is usable".
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#elif defined(_MSC_VER) && defined(_M_X64)
  int r[4];
  __cpuid(r, 1);
  const bool osxsave = r[2] & (1 << 27), avx = r[2] & (1 << 28), f16c = r[2] & (1 << 29);
  if (!osxsave || !avx || !f16c || (_xgetbv(0) & 6) != 6) return false;
  __cpuidex(r, 7, 0);
  return (r[1] & (1 << 5)) != 0;  // AVX2
#else
  return false;
#endif
}

}  // namespace rr
