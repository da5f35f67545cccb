// CUDA loops of the gram family. The Gram matrix is common/symmetric_gram's; the style loss reduces
// (G − S)² in the epilogue of the same upper tiles (common/symmetric_gram.cuh), so G is never
// written unless the residual is kept for the backward. When N must be split, the Gram goes to an
// opmath buffer first and a second kernel forms the residual and the loss. Every sum runs in a
// fixed order (no float atomics).
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <tuple>

#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/symmetric_gram.cuh"
#include "common/symmetric_gram.h"
#include "gram/gram.h"

namespace cvops::gram {
namespace {

using namespace gram_tiles;

// Where sample b's target Gram starts: a shared [C, C], per-sample [B, C, C], or bank row index[b].
template <typename acc_t>
__device__ __forceinline__ const acc_t* target_plane(const acc_t* target, const int64_t* index,
                                                     int64_t target_stride, int64_t b) {
  return target + (index ? index[b] : b) * target_stride;
}

// Style loss with the full N in one block: the tile's (s·acc − S)², mirror included, summed into
// tile_loss[b, tile]; the symmetric residual s·acc − (S + Sᵀ)/2 is written only when `residual`
// is not null.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    style_loss_tiles_kernel(const scalar_t* __restrict__ features, const acc_t* __restrict__ target,
                            const int64_t* __restrict__ index, int64_t target_stride,
                            acc_t* __restrict__ residual, acc_t* __restrict__ tile_loss, int64_t C,
                            int64_t N, int tiles_per_side, acc_t scale) {
  int ti, tj;
  upper_tile(blockIdx.x, tiles_per_side, ti, tj);
  const int64_t b = blockIdx.z;
  const int64_t row0 = int64_t(ti) * kTile, col0 = int64_t(tj) * kTile;
  acc_t acc[kPerThread][kPerThread] = {};
  accumulate_tile(features + b * C * N, C, N, row0, col0, 0, N, acc);

  const acc_t* s = target_plane(target, index, target_stride, b);
  const int64_t plane = b * C * C;
  acc_t partial = 0;
  for_each_tile_output(acc, row0, col0, C, [&](int64_t r, int64_t c, acc_t value) {
    const acc_t g = value * scale;
    const acc_t upper = g - s[r * C + c], lower = g - s[c * C + r];
    // Diagonal tiles hold both (r, c) and (c, r): count each element once there.
    partial += ti == tj ? upper * upper : upper * upper + lower * lower;
    if (residual) {
      const acc_t symmetric = acc_t(0.5) * (upper + lower);
      residual[plane + r * C + c] = symmetric;
      if (ti != tj) residual[plane + c * C + r] = symmetric;
    }
  });
  const acc_t total = block_reduce<kThreads>(partial);
  if (threadIdx.x == 0) tile_loss[b * gridDim.x + blockIdx.x] = total;
}

// From G [B, C, C] (the split path): the symmetric residual G − (S + Sᵀ)/2 into `residual`, and
// the per-block Σ (G − S)² in block_loss[b, block].
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    residual_loss_kernel(const acc_t* __restrict__ gram, const acc_t* __restrict__ target,
                         const int64_t* __restrict__ index, int64_t target_stride,
                         acc_t* __restrict__ residual, acc_t* __restrict__ block_loss, int64_t C) {
  const int64_t b = blockIdx.y, plane = C * C;
  const acc_t* s = target_plane(target, index, target_stride, b);
  acc_t partial = 0;
  for (int64_t e = blockIdx.x * int64_t(kThreads) + threadIdx.x; e < plane;
       e += int64_t(gridDim.x) * kThreads) {
    const acc_t g = gram[b * plane + e];
    const acc_t d = g - s[e];
    partial += d * d;
    residual[b * plane + e] = g - acc_t(0.5) * (s[e] + s[(e % C) * C + e / C]);
  }
  const acc_t total = block_reduce<kThreads>(partial);
  if (threadIdx.x == 0) block_loss[b * gridDim.x + blockIdx.x] = total;
}

std::tuple<at::Tensor, at::Tensor> style_loss_cuda(const char* op, const at::Tensor& x,
                                                   const at::Tensor& target,
                                                   const at::Tensor& index, int64_t target_stride,
                                                   double scale, bool keep_residual) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2);
  const auto opmath = opmath_dtype(x.scalar_type());
  const auto features = x.contiguous();
  const int64_t* index_ptr = index.defined() ? index.const_data_ptr<int64_t>() : nullptr;

  const Launch l = plan_launch(op, B, C, N);
  auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor residual, partial_loss;
  if (l.splits == 1 && N > 0) {
    residual = keep_residual ? at::empty({B, C, C}, x.options().dtype(opmath)) : at::Tensor();
    partial_loss = at::empty({B, l.tiles}, x.options().dtype(opmath));
    CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_style_loss_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      style_loss_tiles_kernel<scalar_t, acc_t>
          <<<dim3(static_cast<unsigned>(l.tiles), 1, B), kThreads, 0, stream>>>(
              features.const_data_ptr<scalar_t>(), target.const_data_ptr<acc_t>(), index_ptr,
              target_stride, residual.defined() ? residual.data_ptr<acc_t>() : nullptr,
              partial_loss.data_ptr<acc_t>(), C, N, l.tiles_per_side, static_cast<acc_t>(scale));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  } else {
    // Few, long planes: split-N Gram into an opmath buffer, then residual and loss from it.
    auto gram = at::empty({B, C, C}, x.options().dtype(opmath));
    if (N == 0) gram.zero_();
    else symmetric_gram_into_cuda(op, features, scale, gram);
    residual = at::empty_like(gram);
    const int blocks = static_cast<int>(std::min<int64_t>(ceil_div<int64_t>(C * C, kThreads), 64));
    partial_loss = at::empty({B, blocks}, gram.options());
    AT_DISPATCH_FLOATING_TYPES(opmath, "cvops_style_residual_cuda", [&] {
      residual_loss_kernel<scalar_t><<<dim3(blocks, B), kThreads, 0, stream>>>(
          gram.const_data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(), index_ptr,
          target_stride, residual.data_ptr<scalar_t>(), partial_loss.data_ptr<scalar_t>(), C);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {partial_loss.sum(1), residual};
}

constexpr Loops kCudaLoops{&symmetric_gram_cuda, &style_loss_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(gram_loops, kCuda, kCudaLoops);

}  // namespace cvops::gram
