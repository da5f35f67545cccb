// CUDA loops of the xcorr family. Forward: one thread per output position of a (sample, channel
// block); the block stages each template plane in shared memory and walks the search window from
// global memory (neighbouring threads read neighbouring columns: coalesced), then a second kernel
// sums the channel blocks in order (full mode). Backward: dx in gather form, one thread per input
// element; dz one warp per template tap, a fixed-order shuffle tree over the batch and the output
// plane. Deterministic: no float atomics.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>

#include "common/checks.h"
#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "xcorr/xcorr.h"

namespace cvops::xcorr {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChannelBlock = 16;         // full mode: channels per block
constexpr int64_t kMaxSharedTemplate = 4096;  // template taps staged in shared memory

struct Geometry {
  int64_t B, C, Bz, Hp, Wp, h, w, Ho, Wo;
};

Geometry geometry_of(const at::Tensor& xp, const at::Tensor& z) {
  const int64_t Hp = xp.size(2), Wp = xp.size(3), h = z.size(2), w = z.size(3);
  return {xp.size(0), xp.size(1), z.size(0), Hp, Wp, h, w, Hp - h + 1, Wp - w + 1};
}

// partial[b, block, q] = Σ over the block's channels c and taps (u, v) of z·x, for output q.
template <typename T, bool kShared>
__global__ void __launch_bounds__(kThreads)
    xcorr_partial_kernel(const T* __restrict__ xp, const T* __restrict__ z, Geometry g,
                         int64_t channels_per_block, T* __restrict__ partial) {
  extern __shared__ unsigned char shared_raw[];
  T* taps_shared = reinterpret_cast<T*>(shared_raw);
  const int64_t b = blockIdx.z, block = blockIdx.y, blocks = gridDim.y;
  const int64_t q = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  const int64_t plane_out = g.Ho * g.Wo, taps = g.h * g.w;
  const bool active = q < plane_out;
  const int64_t i = active ? q / g.Wo : 0, j = active ? q % g.Wo : 0;
  const int64_t zb = g.Bz == 1 ? 0 : b;
  const int64_t c0 = block * channels_per_block, c1 = min(g.C, c0 + channels_per_block);
  T acc = 0;
  for (int64_t c = c0; c < c1; ++c) {
    const T* tap = z + (zb * g.C + c) * taps;
    if constexpr (kShared) {
      __syncthreads();
      for (int64_t k = threadIdx.x; k < taps; k += kThreads) taps_shared[k] = tap[k];
      __syncthreads();
      tap = taps_shared;
    }
    if (active) {
      const T* window = xp + ((b * g.C + c) * g.Hp + i) * g.Wp + j;
      for (int64_t u = 0; u < g.h; ++u) {
        for (int64_t v = 0; v < g.w; ++v) acc += tap[u * g.w + v] * window[u * g.Wp + v];
      }
    }
  }
  if (active) partial[(b * blocks + block) * plane_out + q] = acc;
}

// out[b, q] = Σ_block partial[b, block, q], blocks in order.
template <typename T>
__global__ void sum_blocks_kernel(const T* __restrict__ partial, int64_t B, int64_t blocks,
                                  int64_t plane_out, T* __restrict__ out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < B * plane_out;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / plane_out, q = e % plane_out;
    T acc = 0;
    for (int64_t k = 0; k < blocks; ++k) acc += partial[(b * blocks + k) * plane_out + q];
    out[e] = acc;
  }
}

template <typename T>
void launch_partial(const T* xp, const T* z, const Geometry& g, int64_t channels_per_block,
                    int64_t blocks, T* partial, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(g.Ho * g.Wo, kThreads)),
                  static_cast<unsigned>(blocks), static_cast<unsigned>(g.B));
  const int64_t taps = g.h * g.w;
  if (taps <= kMaxSharedTemplate) {
    xcorr_partial_kernel<T, true>
        <<<grid, kThreads, taps * sizeof(T), stream>>>(xp, z, g, channels_per_block, partial);
  } else {
    xcorr_partial_kernel<T, false>
        <<<grid, kThreads, 0, stream>>>(xp, z, g, channels_per_block, partial);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void forward_cuda(const at::Tensor& xp, const at::Tensor& z, XcorrMode mode, at::Tensor& out) {
  const Geometry g = geometry_of(xp, z);
  CVOPS_CHECK(g.B <= kMaxGridYZ && (mode == XcorrMode::kFull || g.C <= kMaxGridYZ), "xcorr",
              "the CUDA kernel takes at most ", kMaxGridYZ, " search images and channels, got ",
              g.B, " and ", g.C);
  c10::cuda::CUDAGuard guard(out.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "cvops_xcorr_cuda", [&] {
    using T = scalar_t;
    if (mode == XcorrMode::kDepthwise) {  // one channel per block: the partials are the output
      launch_partial<T>(xp.const_data_ptr<T>(), z.const_data_ptr<T>(), g, 1, g.C, out.data_ptr<T>(),
                        stream);
      return;
    }
    // More channels per block past kMaxGridYZ blocks (grid.y).
    const int64_t per_block = std::max(kChannelBlock, ceil_div<int64_t>(g.C, kMaxGridYZ));
    const int64_t blocks = ceil_div<int64_t>(g.C, per_block);
    auto partial = at::empty({g.B, blocks, g.Ho * g.Wo}, out.options());
    launch_partial<T>(xp.const_data_ptr<T>(), z.const_data_ptr<T>(), g, per_block, blocks,
                      partial.data_ptr<T>(), stream);
    sum_blocks_kernel<T><<<grid_stride_blocks(g.B * g.Ho * g.Wo, kThreads), kThreads, 0, stream>>>(
        partial.const_data_ptr<T>(), g.B, blocks, g.Ho * g.Wo, out.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// grad_xp[b, c, y, x] = Σ_{u, v} z[c, u, v] · grad[b, c', y − u, x − v] over the valid taps.
template <typename T>
__global__ void input_grad_kernel(const T* __restrict__ grad, const T* __restrict__ z, Geometry g,
                                  bool full, T* __restrict__ grad_xp) {
  const int64_t total = g.B * g.C * g.Hp * g.Wp;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t x = e % g.Wp, y = (e / g.Wp) % g.Hp, c = (e / (g.Wp * g.Hp)) % g.C;
    const int64_t b = e / (g.Wp * g.Hp * g.C);
    const T* gp = grad + (b * (full ? 1 : g.C) + (full ? 0 : c)) * g.Ho * g.Wo;
    const T* tap = z + ((g.Bz == 1 ? 0 : b) * g.C + c) * g.h * g.w;
    const int64_t u0 = max(int64_t(0), y - g.Ho + 1), u1 = min(g.h - 1, y);
    const int64_t v0 = max(int64_t(0), x - g.Wo + 1), v1 = min(g.w - 1, x);
    T acc = 0;
    for (int64_t u = u0; u <= u1; ++u) {
      for (int64_t v = v0; v <= v1; ++v) acc += tap[u * g.w + v] * gp[(y - u) * g.Wo + (x - v)];
    }
    grad_xp[e] = acc;
  }
}

// grad_z[bz, c, u, v] = Σ_b Σ_{i, j} grad[b, c', i, j] · xp[b, c, i + u, j + v]: one warp per tap
// (a tap sums B·H'·W' terms for one template, H'·W' for per-sample templates: a few hundred at
// SiamFC's sizes, too few to keep a whole block busy), lanes over the output positions in order,
// then a shuffle tree.
constexpr int kTapsPerBlock = kThreads / kWarpSize;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    template_grad_kernel(const T* __restrict__ grad, const T* __restrict__ xp, Geometry g,
                         bool full, int64_t total_taps, T* __restrict__ grad_z) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t e = int64_t(blockIdx.x) * kTapsPerBlock + threadIdx.x / kWarpSize;  // (bz, c, u, v)
  if (e >= total_taps) return;  // the warps share no barrier
  const int64_t v = e % g.w, u = (e / g.w) % g.h, c = (e / (g.w * g.h)) % g.C;
  const int64_t bz = e / (g.w * g.h * g.C);
  const int64_t b0 = g.Bz == 1 ? 0 : bz, b1 = g.Bz == 1 ? g.B : bz + 1;
  const int64_t plane_out = g.Ho * g.Wo, terms = (b1 - b0) * plane_out;
  T acc = 0;
  for (int64_t k = lane; k < terms; k += kWarpSize) {
    const int64_t b = b0 + k / plane_out, q = k % plane_out, i = q / g.Wo, j = q % g.Wo;
    acc += grad[(b * (full ? 1 : g.C) + (full ? 0 : c)) * plane_out + q] *
           xp[((b * g.C + c) * g.Hp + i + u) * g.Wp + j + v];
  }
  acc = warp_reduce(acc);
  if (lane == 0) grad_z[e] = acc;
}

void backward_cuda(const at::Tensor& grad, const at::Tensor& xp, const at::Tensor& z,
                   XcorrMode mode, at::Tensor& grad_xp, at::Tensor& grad_z) {
  const Geometry g = geometry_of(xp, z);
  const bool full = mode == XcorrMode::kFull;
  c10::cuda::CUDAGuard guard(grad_xp.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  CVOPS_CHECK(ceil_div<int64_t>(grad_z.numel(), kTapsPerBlock) <= int64_t(INT32_MAX),
              "xcorr_backward", "the CUDA kernel takes at most ",
              int64_t(INT32_MAX) * kTapsPerBlock, " template taps, got ", grad_z.numel());
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "cvops_xcorr_backward_cuda", [&] {
    using T = scalar_t;
    input_grad_kernel<T><<<grid_stride_blocks(grad_xp.numel(), kThreads), kThreads, 0, stream>>>(
        grad.const_data_ptr<T>(), z.const_data_ptr<T>(), g, full, grad_xp.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    template_grad_kernel<T>
        <<<static_cast<unsigned>(ceil_div<int64_t>(grad_z.numel(), kTapsPerBlock)), kThreads, 0,
           stream>>>(grad.const_data_ptr<T>(), xp.const_data_ptr<T>(), g, full, grad_z.numel(),
                     grad_z.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

constexpr Loops kCudaLoops{&forward_cuda, &backward_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(xcorr_loops, kCuda, kCudaLoops);

}  // namespace cvops::xcorr
