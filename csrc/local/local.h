#pragma once
// The local family: locally connected 2-d layers (DeepFace), convolution-shaped with different
// weights at every output location. The op bodies (local.cpp) validate and lay the tensors out once
// for every device; the devices run the per-location GEMMs without ever materialising the unfolded
// input: the CPU runs each location's filter rows over vectors of samples of a batch-last x (or,
// for a few samples, streams them once against its patches; local_cpu.cpp), CUDA runs fused
// implicit GEMMs that gather the patches into shared memory (local_cuda.cu).
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include "common/loop_table.h"
#include "common/window.h"

namespace cvops::local {

// Locations l = i·out_w + j; taps t = (c, u, v) row-major, as F.unfold orders them.
struct Problem {
  Window2d window;
  int64_t B, C, H, W, O, out_h, out_w, taps;  // taps = C·kh·kw
  C10_HOST_DEVICE int64_t locations() const { return out_h * out_w; }
};

// x [B, C, H, W] contiguous, w [L, O, taps] contiguous, in the compute dtype (float32 or float64).
struct Loops {
  // out [L, O, B] = w_l · patches_l for every location l. tf32: float32 products may run on TF32
  // tensor cores (exact for inputs that were float16/bfloat16).
  void (*forward)(const at::Tensor& x, const at::Tensor& w, const Problem& p, bool tf32,
                  at::Tensor& out);
  // From grad [L, O, B]: grad_x [B, C, H, W] (zeros on entry), the patches' gradient w_lᵀ·grad_l
  // summed back onto the input in a fixed order (no float atomics), and grad_w [L, O, taps] =
  // grad_l · patches_lᵀ, reduced over the batch once per location.
  void (*backward)(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                   const Problem& p, at::Tensor& grad_x, at::Tensor& grad_w);
};

LoopTable<Loops>& local_loops();

}  // namespace cvops::local
