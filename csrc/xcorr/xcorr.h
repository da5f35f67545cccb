#pragma once
// The xcorr family: the Siamese cross-correlation of search features x [B, C, H, W] by templates
// z [Bz, C, h, w] (Bz = B, or 1 template for every search image), summed over channels ("full",
// SiamFC: [B, 1, H', W']) or per channel ("depthwise", SiamRPN++: [B, C, H', W']), with
// H' = H + 2·padding − h + 1. The op bodies (xcorr.cpp: validation, padding, the scale and bias
// epilogue) serve every device; each device supplies the loops below.
#include <ATen/core/Tensor.h>

#include "common/loop_table.h"

namespace cvops::xcorr {

enum class XcorrMode { kFull, kDepthwise };

// The device loops, called with B·C > 0 and contiguous opmath tensors: xp [B, C, Hp, Wp] is the
// padded search, z [Bz, C, h, w]. Results do not depend on the thread count (fixed-order sums).
struct Loops {
  // out [B, Cout, Hp − h + 1, Wp − w + 1], Cout = 1 (full) or C (depthwise), every element written.
  void (*forward)(const at::Tensor& xp, const at::Tensor& z, XcorrMode mode, at::Tensor& out);
  // grad_xp [B, C, Hp, Wp] (every element written) and grad_z [Bz, C, h, w] (zeroed by the op
  // body; summed over the batch when Bz = 1) from the gradient of out, grad [B, Cout, H', W'].
  void (*backward)(const at::Tensor& grad, const at::Tensor& xp, const at::Tensor& z,
                   XcorrMode mode, at::Tensor& grad_xp, at::Tensor& grad_z);
};

LoopTable<Loops>& xcorr_loops();

}  // namespace cvops::xcorr
