#pragma once
// The local family: locally connected 2-d layers (DeepFace), convolution-shaped with different
// weights at every output location. The op bodies (local.cpp) validate, cut the locations into
// chunks and run each chunk's per-location GEMMs through at::bmm (MKL / cuBLAS); the devices supply
// the bit the libraries do not: gathering a chunk's input patches and scattering their gradient
// back, without ever materialising the unfolded input.
#include <ATen/core/Tensor.h>

#include "common/loop_table.h"
#include "common/window.h"

namespace cvops::local {

// Locations l = i·out_w + j; taps (c, u, v) row-major, as F.unfold orders them. A location's
// patches are laid out [taps, B] (the batch contiguous), the operand layout at which the small
// per-location GEMMs run fastest (3× the [B, taps] layout's speed in MKL at DeepFace's sizes).
struct Loops {
  // patches [l1 − l0, C·kh·kw, B] of x [B, C, H, W] (contiguous), 0 where a tap reads padding.
  void (*gather_patches)(const at::Tensor& x, const Window2d& window, int64_t out_w, int64_t l0,
                         int64_t l1, at::Tensor& patches);
  // grad_x [B, C, H, W] += the patches' gradient [l1 − l0, C·kh·kw, B] summed back onto the
  // input, each element in a fixed order (no float atomics).
  void (*scatter_patches)(const at::Tensor& grad_patches, const Window2d& window, int64_t out_w,
                          int64_t l0, int64_t l1, at::Tensor& grad_x);
};

LoopTable<Loops>& local_loops();

}  // namespace cvops::local
