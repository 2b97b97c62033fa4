// The portable kernels: the generic loops of ops.h compiled for the baseline instruction set
// (SSE2 on x86-64, NEON on arm64, whatever the compiler auto-vectorises them to).
#include "table.h"

namespace rr {

const KernelTable& portable_kernels() {
  static const KernelTable table = generic_table("portable");
  return table;
}

}  // namespace rr
