#include "common/window.h"

#include <utility>

#include "common/checks.h"

namespace cvops {

WindowOutput check_window(const char* op, int64_t input_h, int64_t input_w,
                          const Window2d& window) {
  const Window1d& h = window.h;
  const Window1d& w = window.w;
  CVOPS_CHECK(h.kernel >= 1 && w.kernel >= 1, op, "kernel size must be >= 1, got (", h.kernel, ", ",
              w.kernel, ")");
  CVOPS_CHECK(h.stride >= 1 && w.stride >= 1, op, "stride must be >= 1, got (", h.stride, ", ",
              w.stride, ")");
  CVOPS_CHECK(h.dilation >= 1 && w.dilation >= 1, op, "dilation must be >= 1, got (", h.dilation,
              ", ", w.dilation, ")");
  CVOPS_CHECK(h.padding >= 0 && w.padding >= 0, op, "padding must be >= 0, got (", h.padding, ", ",
              w.padding, ")");
  const WindowOutput out{window_output_size(input_h, h), window_output_size(input_w, w)};
  CVOPS_CHECK(out.h >= 1 && out.w >= 1, op, "the kernel (", h.dilation * (h.kernel - 1) + 1, " x ",
              w.dilation * (w.kernel - 1) + 1, " with dilation) is larger than the padded input (",
              input_h + 2 * h.padding, " x ", input_w + 2 * w.padding, ")");
  return out;
}

Window2d window_of(const char* op, int64_t kernel_h, int64_t kernel_w, c10::IntArrayRef stride,
                   c10::IntArrayRef padding, c10::IntArrayRef dilation) {
  for (const auto& [name, values] : {std::pair<const char*, c10::IntArrayRef>{"stride", stride},
                                     {"padding", padding},
                                     {"dilation", dilation}})
    CVOPS_CHECK(values.size() == 2, op, name, " must be an int or a pair (h, w), got ", values);
  return {{kernel_h, stride[0], padding[0], dilation[0]},
          {kernel_w, stride[1], padding[1], dilation[1]}};
}

}  // namespace cvops
