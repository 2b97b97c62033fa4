// Fills a KernelTable from the loops of ops.h, as compiled in the including translation unit;
// a variant then overrides the entries it has hand-written SIMD bodies for.
#pragma once

#include "kernels.h"
#include "ops.h"

namespace {

rr::KernelTable generic_table(const char* isa) {
  rr::KernelTable t{};
  t.isa = isa;
  for (int d = 0; d < rr::kDTypeCount; d++) {
    t.reduce[rr::kSum][d] = kReduceRow<SumOp>[d];
    t.reduce[rr::kMin][d] = kReduceRow<MinOp>[d];
    t.reduce[rr::kMax][d] = kReduceRow<MaxOp>[d];
    t.reduce[rr::kProduct][d] = kReduceRow<ProductOp>[d];
  }
  t.divide_f32 = divide_f32_any;
  t.divide_f64 = divide_loop<double>;
  t.scale_f32 = scale_f32_any;
  t.scale_f64 = scale_loop<double>;
  t.max_abs_finite_f32 = max_abs_finite_any;
  t.f32_to_f16 = f32_to_f16_any;
  t.f16_to_f32 = f16_to_f32_any;
  t.add_f16 = add_f16_any;
  t.add_f16_max = add_f16_max_any;
  t.f32_to_bf16 = f32_to_bf16_loop;
  t.bf16_to_f32 = bf16_to_f32_loop;
  t.add_bf16 = add_bf16_loop;
  return t;
}

}  // namespace
