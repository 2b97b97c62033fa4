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

Napi::Value rr::SchedYield(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

#endif
