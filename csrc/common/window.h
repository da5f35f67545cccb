#pragma once
// The window geometry of convolution-like ops (binary XNOR convolution, cross-correlation, locally
// connected layers): the output size from kernel, stride, padding and dilation, the input position
// a window tap reads in the padded input, and one set of checks with one error text. Host and
// device code share the arithmetic.
#include <c10/macros/Macros.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>

namespace cvops {

struct Window1d {
  int64_t kernel, stride, padding, dilation;
};

struct Window2d {
  Window1d h, w;
};

struct WindowOutput {
  int64_t h, w;
};

// floor((input + 2·padding − dilation·(kernel − 1) − 1) / stride) + 1, as torch's convolutions;
// < 1 when the dilated kernel is larger than the padded input.
C10_HOST_DEVICE inline int64_t window_output_size(int64_t input, const Window1d& w) {
  const int64_t span = w.dilation * (w.kernel - 1) + 1;
  const int64_t room = input + 2 * w.padding - span;
  return room < 0 ? 0 : room / w.stride + 1;
}

// The input position that tap u of output position i reads; outside [0, input) it is padding.
C10_HOST_DEVICE inline int64_t window_input_index(int64_t i, int64_t u, const Window1d& w) {
  return i * w.stride - w.padding + u * w.dilation;
}

// Checks the window (kernel, stride, dilation >= 1, padding >= 0) against an input of
// input_h × input_w and returns the output size, >= 1 in each dimension; errors name the op and
// the argument: "cvops.<op>: stride must be >= 1, got (0, 1)".
WindowOutput check_window(const char* op, int64_t input_h, int64_t input_w, const Window2d& window);

// The window of a kernel_h × kernel_w kernel from an op schema's int[2] stride, padding and
// dilation, each of which must hold two values (h, w).
Window2d window_of(const char* op, int64_t kernel_h, int64_t kernel_w, c10::IntArrayRef stride,
                   c10::IntArrayRef padding, c10::IntArrayRef dilation);

}  // namespace cvops
