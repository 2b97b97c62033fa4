#pragma once
#include <napi.h>

namespace rr {
Napi::Value ShmMap(const Napi::CallbackInfo& info);
Napi::Value ShmReserve(const Napi::CallbackInfo& info);
bool ShmSupported();
Napi::Value SchedYield(const Napi::CallbackInfo& info);
Napi::Value AddressOf(const Napi::CallbackInfo& info);
Napi::Value PeerRead(const Napi::CallbackInfo& info);
}  // namespace rr
