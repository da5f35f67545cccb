#include "common/checks.h"

#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <unistd.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

namespace cvops {
namespace {

double gib(double bytes) { return std::round(bytes / double(1 << 30) * 10) / 10; }

double physical_memory_bytes() {
  return double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
}

double output_bytes(at::IntArrayRef sizes, const at::TensorOptions& options) {
  double bytes = double(options.dtype().itemsize());  // in double: the product cannot overflow
  for (const int64_t size : sizes) bytes *= double(size);
  return bytes;
}

}  // namespace

void check_index_range(const char* op, const char* name, const at::Tensor& index, int64_t bound) {
  if (index.numel() == 0) return;
  // An expanded (stride-0) dim repeats its values: read one copy, not the broadcast.
  std::vector<int64_t> sizes(index.sizes().begin(), index.sizes().end());
  for (int64_t d = 0; d < index.dim(); ++d)
    if (index.stride(d) == 0) sizes[d] = 1;
  const auto distinct = index.as_strided(sizes, index.strides(), index.storage_offset());
  auto [lo, hi] = at::aminmax(distinct);
  const int64_t min_value = lo.item<int64_t>();
  const int64_t max_value = hi.item<int64_t>();
  CVOPS_CHECK(min_value >= 0 && max_value < bound, op, name, " values must lie in [0, ", bound,
              "), got values in [", min_value, ", ", max_value, "]");
}

void check_eps(const char* op, double eps, at::ScalarType compute_dtype) {
  const double largest = compute_dtype == at::kDouble ? std::numeric_limits<double>::max()
                                                      : std::numeric_limits<float>::max();
  CVOPS_CHECK(eps >= 0 && eps <= largest, op, "eps must be a number >= 0 that is finite in ",
              compute_dtype, ", got ", eps);
}

void check_output_fits(const char* op, const std::string& asked_by, const std::string& what,
                       double bytes, const at::Device& device) {
  if (!device.is_cpu()) return;
  const double limit = physical_memory_bytes();
  CVOPS_CHECK(bytes <= limit, op, asked_by, " asks for ", what, " (", gib(bytes),
              " GiB), more than this machine's memory (", gib(limit), " GiB)");
}

void check_output_fits(const char* op, const std::string& asked_by, at::IntArrayRef sizes,
                       const at::TensorOptions& options) {
  std::ostringstream what;
  what << "a " << sizes << " " << c10::typeMetaToScalarType(options.dtype()) << " output";
  check_output_fits(op, asked_by, what.str(), output_bytes(sizes, options), options.device());
}

at::Tensor empty_output(const char* op, const std::string& asked_by, at::IntArrayRef sizes,
                        const at::TensorOptions& options, at::MemoryFormat format) {
  check_output_fits(op, asked_by, sizes, options);
  const double bytes = output_bytes(sizes, options);
  try {
    return at::empty(sizes, options, format);
  } catch (const c10::OutOfMemoryError& e) {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "cvops.", op, ": ", asked_by, " asks for a ", sizes,
                     " output (", gib(bytes), " GiB) that does not fit in ", options.device(),
                     "'s memory: ", e.what_without_backtrace());
  }
}

}  // namespace cvops
