#pragma once
#include <napi.h>

namespace rr {
Napi::Value ShmMap(const Napi::CallbackInfo& info);
bool ShmSupported();
}  // namespace rr
