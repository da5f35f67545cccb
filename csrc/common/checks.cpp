#include "common/checks.h"

#include <ATen/ops/aminmax.h>

namespace cvops {

void check_index_range(const char* op, const char* name, const at::Tensor& index, int64_t bound) {
  if (index.numel() == 0) return;
  auto [lo, hi] = at::aminmax(index);
  const int64_t min_value = lo.item<int64_t>();
  const int64_t max_value = hi.item<int64_t>();
  CVOPS_CHECK(min_value >= 0 && max_value < bound, op, name, " values must lie in [0, ", bound,
              "), got values in [", min_value, ", ", max_value, "]");
}

}  // namespace cvops
