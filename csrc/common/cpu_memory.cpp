#include "common/cpu_memory.h"

#include <ATen/ops/empty.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace cvops {

namespace {
constexpr std::uintptr_t kHugePage = std::uintptr_t(2) << 20;
}  // namespace

at::Tensor empty_streaming_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                                  at::MemoryFormat format) {
  auto out = at::empty(sizes, options.memory_format(format));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (out.device().is_cpu() && out.nbytes() >= 4 * kHugePage) {
    const auto start = reinterpret_cast<std::uintptr_t>(out.data_ptr());
    const std::uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
    const std::uintptr_t end = (start + out.nbytes()) & ~(kHugePage - 1);
    // Advice only: an error (THP off, old kernel) leaves ordinary pages, which is still correct.
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return out;
}

}  // namespace cvops
