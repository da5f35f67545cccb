// CUDA loops of the local family: one thread per patch value (gather), and the gradient in
// gather form, one thread per input element walking the taps that read it (no float atomics:
// every element sums in a fixed order). The per-location GEMMs are cuBLAS's (at::bmm, local.cpp).
#include <ATen/cuda/CUDAContext.h>

#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/window.h"
#include "local/local.h"

namespace cvops::local {
namespace {

constexpr int kThreads = 256;

struct Taps {
  int64_t B, C, H, W;
};

template <typename T>
__global__ void gather_patches_kernel(const T* __restrict__ x, Taps t, Window2d window,
                                      int64_t out_w, int64_t l0, int64_t count,
                                      T* __restrict__ patches) {
  const int64_t kh = window.h.kernel, kw = window.w.kernel, row = t.C * kh * kw;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count;
       e += int64_t(gridDim.x) * blockDim.x) {
    // [l, (c, u, v), b]: consecutive threads take consecutive samples (coalesced writes).
    const int64_t b = e % t.B, tap = (e / t.B) % row, l = l0 + e / (t.B * row);
    const int64_t v = tap % kw, u = (tap / kw) % kh, c = tap / (kw * kh);
    const int64_t y = window_input_index(l / out_w, u, window.h);
    const int64_t xx = window_input_index(l % out_w, v, window.w);
    patches[e] =
        y >= 0 && y < t.H && xx >= 0 && xx < t.W ? x[((b * t.C + c) * t.H + y) * t.W + xx] : T(0);
  }
}

// grad_x[b, c, y, x] += Σ over the taps (u, v) whose location (i, j) in l0..l1 reads (y, x).
template <typename T>
__global__ void scatter_patches_kernel(const T* __restrict__ grad_patches, Taps t, Window2d window,
                                       int64_t out_h, int64_t out_w, int64_t l0, int64_t l1,
                                       T* __restrict__ grad_x) {
  const int64_t kh = window.h.kernel, kw = window.w.kernel, row = t.C * kh * kw;
  const int64_t total = t.B * t.C * t.H * t.W;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t xx = e % t.W, y = (e / t.W) % t.H, c = (e / (t.W * t.H)) % t.C;
    const int64_t b = e / (t.W * t.H * t.C);
    T acc = 0;
    for (int64_t u = 0; u < kh; ++u) {
      const int64_t oy = y + window.h.padding - u * window.h.dilation;  // i · stride
      if (oy < 0 || oy % window.h.stride != 0 || oy / window.h.stride >= out_h) continue;
      for (int64_t v = 0; v < kw; ++v) {
        const int64_t ox = xx + window.w.padding - v * window.w.dilation;
        if (ox < 0 || ox % window.w.stride != 0 || ox / window.w.stride >= out_w) continue;
        const int64_t l = (oy / window.h.stride) * out_w + ox / window.w.stride;
        if (l < l0 || l >= l1) continue;
        acc += grad_patches[((l - l0) * row + (c * kh + u) * kw + v) * t.B + b];
      }
    }
    grad_x[e] += acc;
  }
}

Taps taps_of(const at::Tensor& t) { return {t.size(0), t.size(1), t.size(2), t.size(3)}; }

void gather_patches_cuda(const at::Tensor& x, const Window2d& window, int64_t out_w, int64_t l0,
                         int64_t l1, at::Tensor& patches) {
  c10::cuda::CUDAGuard guard(x.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t count = patches.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_gather_patches_cuda", [&] {
    gather_patches_kernel<scalar_t><<<grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), taps_of(x), window, out_w, l0, count,
        patches.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void scatter_patches_cuda(const at::Tensor& grad_patches, const Window2d& window, int64_t out_w,
                          int64_t l0, int64_t l1, at::Tensor& grad_x) {
  c10::cuda::CUDAGuard guard(grad_x.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t out_h = window_output_size(grad_x.size(2), window.h);
  AT_DISPATCH_FLOATING_TYPES(grad_x.scalar_type(), "cvops_scatter_patches_cuda", [&] {
    scatter_patches_kernel<scalar_t>
        <<<grid_stride_blocks(grad_x.numel(), kThreads), kThreads, 0, stream>>>(
            grad_patches.const_data_ptr<scalar_t>(), taps_of(grad_x), window, out_h, out_w, l0, l1,
            grad_x.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

constexpr Loops kCudaLoops{&gather_patches_cuda, &scatter_patches_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(local_loops, kCuda, kCudaLoops);

}  // namespace cvops::local
