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

// Throws an Error carrying the errno as `errno` (src/kernels/native.ts adds the name as `code`).
Napi::Value ThrowErrno(Napi::Env env, const std::string& what, int e) {
  Napi::Error err = Napi::Error::New(env, what + ": " + std::strerror(e));
  err.Set("errno", Napi::Number::New(env, e));
  err.ThrowAsJavaScriptException();
  return env.Undefined();
}

// (fd, bytes) with fd a descriptor number and bytes an integer in 1..2^32; throws otherwise.
bool FdAndBytes(const Napi::CallbackInfo& info, const char* usage, int* fd, size_t* bytes) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
    return false;
  }
  const double f = info[0].As<Napi::Number>().DoubleValue();
  const double want = info[1].As<Napi::Number>().DoubleValue();
  if (!(f >= 0) || f > 2147483647.0 || f != static_cast<double>(static_cast<int>(f))) {
    Napi::RangeError::New(env, std::string(usage) + ": fd must be a descriptor number").ThrowAsJavaScriptException();
    return false;
  }
  if (!(want > 0) || want > 4294967296.0 || want != static_cast<double>(static_cast<size_t>(want))) {
    Napi::RangeError::New(env, std::string(usage) + ": bytes must be an integer in 1..2^32").ThrowAsJavaScriptException();
    return false;
  }
  *fd = static_cast<int>(f);
  *bytes = static_cast<size_t>(want);
  return true;
}

}  // namespace

// shmMap(fd, bytes): maps the open file `fd` shared, read-write. The caller (src/transport/shm/
// region.ts) opened it without following a symbolic link and checked it with fstat; this checks
// again what the mapping relies on — a regular file of exactly `bytes` — so that a bad call
// throws instead of mapping a device or a file that a later access would run past (SIGBUS).
// The descriptor stays the caller's to close; the mapping outlives it.
Napi::Value rr::ShmMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  size_t bytes;
  if (!FdAndBytes(info, "shmMap(fd: number, bytes: number)", &fd, &bytes)) return env.Undefined();
  struct stat st;
  if (fstat(fd, &st) != 0) return Throw(env, "shmMap: fstat");
  if (!S_ISREG(st.st_mode) || static_cast<size_t>(st.st_size) != bytes) {
    Napi::RangeError::New(env, "shmMap: not a regular file of " + std::to_string(bytes) + " bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Throw(env, "shmMap: mmap");
  size_t* len = new size_t(bytes);
  return Napi::ArrayBuffer::New(
      env, p, bytes, [](Napi::Env, void* data, size_t* n) {
        munmap(data, *n);
        delete n;
      },
      len);
}

// shmReserve(fd, bytes): allocates the first `bytes` of the file `fd` now (posix_fallocate), so
// that a /dev/shm too small for a region is an ENOSPC here instead of a SIGBUS at the first write
// to a page that tmpfs cannot supply. Throws an Error with `errno` on failure (EOPNOTSUPP where
// the filesystem cannot; the caller then writes zeros instead).
Napi::Value rr::ShmReserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  size_t bytes;
  if (!FdAndBytes(info, "shmReserve(fd: number, bytes: number)", &fd, &bytes)) return env.Undefined();
  int e;
  do {
    e = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  } while (e == EINTR);
  if (e != 0) return ThrowErrno(env, "shmReserve: posix_fallocate", e);
  return env.Undefined();
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

Napi::Value rr::ShmReserve(const Napi::CallbackInfo& info) {
  Napi::Error::New(info.Env(), "shmReserve: shared memory links are implemented for Linux only").ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

bool rr::ShmSupported() { return false; }

Napi::Value rr::AddressOf(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }
Napi::Value rr::PeerRead(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

Napi::Value rr::SchedYield(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

#endif
