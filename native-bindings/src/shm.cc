// Shared memory for ranks on the same host: a file in /dev/shm mapped into both processes, handed
// to JavaScript as an external ArrayBuffer that unmaps itself when collected. The ring's
// WebSocket link still carries every header and does the flow control (src/transport/shm.ts);
// only payload bytes travel through the mapping, so they skip the kernel's two TCP copies.
#include "shm.h"

#if defined(__linux__)
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace {

Napi::Value Throw(Napi::Env env, const std::string& what) {
  Napi::Error::New(env, what + ": " + std::strerror(errno)).ThrowAsJavaScriptException();
  return env.Undefined();
}

}  // namespace

// shmMap(path, bytes, create): create (O_EXCL, mode 0600, sized to `bytes`) or open an existing
// file of at least `bytes`, and map it shared, read-write.
Napi::Value rr::ShmMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsBoolean()) {
    Napi::TypeError::New(env, "shmMap(path: string, bytes: number, create: boolean)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const double want = info[1].As<Napi::Number>().DoubleValue();
  const bool create = info[2].As<Napi::Boolean>().Value();
  if (!(want > 0) || want > 4294967296.0 || want != static_cast<double>(static_cast<size_t>(want))) {
    Napi::RangeError::New(env, "shmMap: bytes must be an integer in 1..2^32").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const size_t bytes = static_cast<size_t>(want);
  const int fd = open(path.c_str(), create ? (O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC) : (O_RDWR | O_CLOEXEC), 0600);
  if (fd < 0) return Throw(env, "shmMap: open " + path);
  struct stat st;
  if ((create && ftruncate(fd, static_cast<off_t>(bytes)) != 0) || fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    errno = e;
    return Throw(env, "shmMap: size " + path);
  }
  if (static_cast<size_t>(st.st_size) < bytes) {
    close(fd);
    Napi::RangeError::New(env, "shmMap: " + path + " is smaller than requested").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  close(fd);
  errno = e;
  if (p == MAP_FAILED) return Throw(env, "shmMap: mmap " + path);
  size_t* len = new size_t(bytes);
  return Napi::ArrayBuffer::New(
      env, p, bytes, [](Napi::Env, void* data, size_t* n) {
        munmap(data, *n);
        delete n;
      },
      len);
}

bool rr::ShmSupported() { return true; }

// addressOf(bytes): where a Uint8Array's bytes start in this process (a large typed array's
// backing store never moves). A point-to-point sender on the same host tells its receiver this,
// so that the receiver can copy the bytes straight out of the sender (peerRead).
Napi::Value rr::AddressOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "addressOf(bytes: Uint8Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  return Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(a.Data())));
}

// peerRead(pid, address, into): copies into.byteLength bytes from `address` in process `pid`
// into `into`, with process_vm_readv: one copy, where a shared-memory slot costs two (into the
// slot, out of it). Needs the same user and, under Yama's ptrace_scope >= 1, more: it fails with
// EPERM, and the caller falls back to the slots. Returns the bytes copied; throws on failure.
Napi::Value rr::PeerRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsTypedArray() ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "peerRead(pid: number, address: number, into: Uint8Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const double pid = info[0].As<Napi::Number>().DoubleValue();
  const double addr = info[1].As<Napi::Number>().DoubleValue();
  if (!(pid > 0) || pid != static_cast<double>(static_cast<pid_t>(pid)) || !(addr > 0) || addr >= 9007199254740992.0 ||
      addr != static_cast<double>(static_cast<uint64_t>(addr))) {
    Napi::RangeError::New(env, "peerRead: pid and address must be positive integers").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array into = info[2].As<Napi::Uint8Array>();
  uint8_t* dst = into.Data();
  const size_t n = into.ByteLength();
  uintptr_t src = static_cast<uintptr_t>(addr);
  size_t done = 0;
  while (done < n) {
    struct iovec local = {dst + done, n - done};
    struct iovec remote = {reinterpret_cast<void*>(src + done), n - done};
    const ssize_t got = process_vm_readv(static_cast<pid_t>(pid), &local, 1, &remote, 1, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return Throw(env, "peerRead: process_vm_readv");
    }
    if (got == 0) {
      errno = EFAULT;
      return Throw(env, "peerRead: process_vm_readv");
    }
    done += static_cast<size_t>(got);
  }
  return Napi::Number::New(env, static_cast<double>(done));
}


// schedYield(): lets another runnable thread have this core. A busy-polling rank calls it once per
// turn of its event loop, so that on a machine with more runnable threads than cores the poller
// gives way instead of holding its core for a whole time slice.
Napi::Value rr::SchedYield(const Napi::CallbackInfo& info) {
  sched_yield();
  return info.Env().Undefined();
}

#else

Napi::Value rr::ShmMap(const Napi::CallbackInfo& info) {
  Napi::Error::New(info.Env(), "shmMap: shared memory links are implemented for Linux only").ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

bool rr::ShmSupported() { return false; }

Napi::Value rr::AddressOf(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }
Napi::Value rr::PeerRead(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

Napi::Value rr::SchedYield(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

#endif
