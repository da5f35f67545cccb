#pragma once
// The local family: locally connected 2-d layers (DeepFace), convolution-shaped with different
// weights at every output location. The op bodies (local.cpp) validate and lay the tensors out once
// for every device; the devices run the per-location GEMMs without ever materialising the unfolded
// input: the CPU gathers a chunk of locations' patches and runs MKL's batched GEMM over them, CUDA
// runs fused implicit GEMMs that gather the patches into shared memory (local_cuda.cu).
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

// Where tap t of location l reads x [B, C, H, W] (contiguous) within one sample, or -1 where it
// reads padding. Host and device share it.
C10_HOST_DEVICE inline int64_t patch_offset(const Problem& p, int64_t l, int64_t t) {
  const int64_t kh = p.window.h.kernel, kw = p.window.w.kernel;
  const int64_t v = t % kw, u = (t / kw) % kh, c = t / (kw * kh);
  const int64_t y = window_input_index(l / p.out_w, u, p.window.h);
  const int64_t x = window_input_index(l % p.out_w, v, p.window.w);
  return y >= 0 && y < p.H && x >= 0 && x < p.W ? (c * p.H + y) * p.W + x : -1;
}

// Locations per chunk where a device materialises the patches of a chunk ([n, taps, B], the batch
// contiguous): about 8 MB of float32, so they stay in the last-level cache next to their weights.
int64_t chunk_locations(const Problem& p);

// x [B, C, H, W] contiguous, w [L, O, taps] contiguous, in the compute dtype (float32 or float64).
struct Loops {
  // out [L, O, B] = w_l · patches_l for every location l. tf32: float32 products may run on TF32
  // tensor cores (exact for inputs that were float16/bfloat16).
  void (*forward)(const at::Tensor& x, const at::Tensor& w, const Problem& p, bool tf32,
                  at::Tensor& out);
  // From grad [L, O, B]: grad_x [B, C, H, W] (zeros on entry) += patchesᵀ's gradient scattered
  // back in a fixed order (no float atomics), grad_w [L, O, taps] = grad_l · patches_lᵀ, reduced
  // over the batch once per location.
  void (*backward)(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                   const Problem& p, at::Tensor& grad_x, at::Tensor& grad_w);
};

LoopTable<Loops>& local_loops();

}  // namespace cvops::local
