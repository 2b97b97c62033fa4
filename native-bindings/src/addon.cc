// N-API glue: unwraps typed arrays, checks what C++ must not get wrong, calls the kernel table.
//
// src/kernels/native.ts validates every argument before calling in here; the checks below are a
// second line so that a bad call can only ever throw a JS exception, never crash the process.
// The module exports the table chosen for this CPU and, under `portable`, the portable table
// (so the tests can hold the plain C++ path to the same results on an AVX2 machine).
#include <napi.h>

#include <cmath>
#include <cstdint>

#include "half.h"
#include "kernels.h"
#include "shm.h"

namespace {

// Bumped whenever the exported functions change; native.ts refuses an addon built from other sources.
constexpr uint32_t kAbiVersion = 5;

struct View {
  napi_typedarray_type type;
  size_t length;  // elements
  void* data;
};

const rr::KernelTable& Table(const Napi::CallbackInfo& info) { return *static_cast<const rr::KernelTable*>(info.Data()); }

bool Fail(const Napi::CallbackInfo& info, const char* message) {
  Napi::TypeError::New(info.Env(), message).ThrowAsJavaScriptException();
  return false;
}

bool GetView(const Napi::CallbackInfo& info, size_t i, View* out) {
  if (info.Length() <= i) return Fail(info, "ringreduce_kernels: missing typed-array argument");
  const napi_status s = napi_get_typedarray_info(info.Env(), info[i], &out->type, &out->length, &out->data, nullptr, nullptr);
  if (s != napi_ok) return Fail(info, "ringreduce_kernels: argument is not a typed array");
  return true;
}

bool GetF32(const Napi::CallbackInfo& info, size_t i, View* out) {
  return GetView(info, i, out) && (out->type == napi_float32_array || Fail(info, "ringreduce_kernels: expected a Float32Array"));
}

// The 16-bit side: a Uint8Array of even byte length (any byte offset) or a Uint16Array.
bool GetHalf(const Napi::CallbackInfo& info, size_t i, View* out) {
  if (!GetView(info, i, out)) return false;
  if (out->type == napi_uint16_array) return true;
  if (out->type != napi_uint8_array) return Fail(info, "ringreduce_kernels: expected a Uint8Array or Uint16Array of 16-bit words");
  if (out->length % 2 != 0) return Fail(info, "ringreduce_kernels: 16-bit word bytes must have an even length");
  out->length /= 2;
  return true;
}

bool GetNumber(const Napi::CallbackInfo& info, size_t i, double* out) {
  if (info.Length() <= i || napi_get_value_double(info.Env(), info[i], out) != napi_ok) {
    return Fail(info, "ringreduce_kernels: expected a number");
  }
  return true;
}

bool SameLength(const Napi::CallbackInfo& info, const View& a, const View& b) {
  return a.length == b.length || Fail(info, "ringreduce_kernels: arrays differ in element count");
}

int DTypeOf(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return rr::kF32;
    case napi_float64_array: return rr::kF64;
    case napi_int32_array: return rr::kI32;
    case napi_uint32_array: return rr::kU32;
    case napi_int16_array: return rr::kI16;
    case napi_uint16_array: return rr::kU16;
    case napi_int8_array: return rr::kI8;
    case napi_uint8_array: return rr::kU8;
    default: return -1;  // Uint8ClampedArray, BigInt arrays: not collective dtypes
  }
}

// reduce(op, dst, src): op is 0 sum, 1 min, 2 max, 3 product.
Napi::Value Reduce(const Napi::CallbackInfo& info) {
  double op;
  View dst, src;
  if (!GetNumber(info, 0, &op) || !GetView(info, 1, &dst) || !GetView(info, 2, &src)) return {};
  const int dtype = DTypeOf(dst.type);
  if (!(op >= 0 && op < rr::kOpCount && op == std::floor(op))) {
    Fail(info, "ringreduce_kernels: unknown reduce op");
    return {};
  }
  if (dtype < 0 || src.type != dst.type) {
    Fail(info, "ringreduce_kernels: dst and src must be the same supported typed-array type");
    return {};
  }
  if (!SameLength(info, dst, src)) return {};
  Table(info).reduce[int(op)][dtype](dst.data, src.data, dst.length);
  return {};
}

// divide(x, divisor) and scale(x, factor) on Float32Array / Float64Array.
template <bool kDivide>
Napi::Value ScaleOrDivide(const Napi::CallbackInfo& info) {
  View x;
  double v;
  if (!GetView(info, 0, &x) || !GetNumber(info, 1, &v)) return {};
  const rr::KernelTable& t = Table(info);
  if (x.type == napi_float32_array) {
    (kDivide ? t.divide_f32 : t.scale_f32)(static_cast<float*>(x.data), x.length, v);
  } else if (x.type == napi_float64_array) {
    (kDivide ? t.divide_f64 : t.scale_f64)(static_cast<double*>(x.data), x.length, v);
  } else {
    Fail(info, "ringreduce_kernels: expected a Float32Array or Float64Array");
  }
  return {};
}

Napi::Value MaxAbsFinite(const Napi::CallbackInfo& info) {
  View x;
  if (!GetF32(info, 0, &x)) return {};
  const uint32_t bits = Table(info).max_abs_finite_f32(static_cast<const float*>(x.data), x.length);
  return Napi::Number::New(info.Env(), double(rr::float_of(bits)));
}

// f32ToF16(dst16, src32, scale), f16ToF32(dst32, src16, scale), addF16(acc32, src16, scale)
Napi::Value F32ToF16(const Napi::CallbackInfo& info) {
  View dst, src;
  double scale;
  if (!GetHalf(info, 0, &dst) || !GetF32(info, 1, &src) || !GetNumber(info, 2, &scale) || !SameLength(info, dst, src)) return {};
  Table(info).f32_to_f16(static_cast<uint8_t*>(dst.data), static_cast<const float*>(src.data), src.length, float(scale));
  return {};
}
template <bool kAdd>
Napi::Value F16ToF32(const Napi::CallbackInfo& info) {
  View dst, src;
  double scale;
  if (!GetF32(info, 0, &dst) || !GetHalf(info, 1, &src) || !GetNumber(info, 2, &scale) || !SameLength(info, dst, src)) return {};
  const rr::KernelTable& t = Table(info);
  (kAdd ? t.add_f16 : t.f16_to_f32)(static_cast<float*>(dst.data), static_cast<const uint8_t*>(src.data), src.length, float(scale));
  return {};
}

// addF16Max(acc32, src16, scale) -> max |acc| after adding
Napi::Value AddF16Max(const Napi::CallbackInfo& info) {
  View dst, src;
  double scale;
  if (!GetF32(info, 0, &dst) || !GetHalf(info, 1, &src) || !GetNumber(info, 2, &scale) || !SameLength(info, dst, src)) return {};
  const uint32_t bits = Table(info).add_f16_max(static_cast<float*>(dst.data), static_cast<const uint8_t*>(src.data), src.length, float(scale));
  return Napi::Number::New(info.Env(), double(rr::float_of(bits)));
}

// f32ToBf16(dst16, src32), bf16ToF32(dst32, src16), addBf16(acc32, src16)
Napi::Value F32ToBf16(const Napi::CallbackInfo& info) {
  View dst, src;
  if (!GetHalf(info, 0, &dst) || !GetF32(info, 1, &src) || !SameLength(info, dst, src)) return {};
  Table(info).f32_to_bf16(static_cast<uint8_t*>(dst.data), static_cast<const float*>(src.data), src.length);
  return {};
}
template <bool kAdd>
Napi::Value Bf16ToF32(const Napi::CallbackInfo& info) {
  View dst, src;
  if (!GetF32(info, 0, &dst) || !GetHalf(info, 1, &src) || !SameLength(info, dst, src)) return {};
  const rr::KernelTable& t = Table(info);
  (kAdd ? t.add_bf16 : t.bf16_to_f32)(static_cast<float*>(dst.data), static_cast<const uint8_t*>(src.data), src.length);
  return {};
}

Napi::Object Bind(Napi::Env env, const rr::KernelTable& table) {
  Napi::Object o = Napi::Object::New(env);
  void* data = const_cast<rr::KernelTable*>(&table);
  auto def = [&](const char* name, Napi::Function::Callback fn) { o.Set(name, Napi::Function::New(env, fn, name, data)); };
  o.Set("isa", Napi::String::New(env, table.isa));
  def("reduce", Reduce);
  def("divide", ScaleOrDivide<true>);
  def("scale", ScaleOrDivide<false>);
  def("maxAbsFinite", MaxAbsFinite);
  def("f32ToF16", F32ToF16);
  def("f16ToF32", F16ToF32<false>);
  def("addF16", F16ToF32<true>);
  def("addF16Max", AddF16Max);
  def("f32ToBf16", F32ToBf16);
  def("bf16ToF32", Bf16ToF32<false>);
  def("addBf16", Bf16ToF32<true>);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  const rr::KernelTable* fast = rr::x86_avx2_kernels();
  const rr::KernelTable& portable = rr::portable_kernels();
  Napi::Object selected = Bind(env, fast ? *fast : portable);
  selected.Set("abi", Napi::Number::New(env, kAbiVersion));
  selected.Set("portable", Bind(env, portable));
  if (rr::ShmSupported()) {
    selected.Set("shmMap", Napi::Function::New(env, rr::ShmMap, "shmMap"));
    selected.Set("shmReserve", Napi::Function::New(env, rr::ShmReserve, "shmReserve"));
    selected.Set("addressOf", Napi::Function::New(env, rr::AddressOf, "addressOf"));
    selected.Set("peerRead", Napi::Function::New(env, rr::PeerRead, "peerRead"));
  }
  selected.Set("schedYield", Napi::Function::New(env, rr::SchedYield, "schedYield"));
  return selected;
}

}  // namespace

NODE_API_MODULE(ringreduce_kernels, Init)
