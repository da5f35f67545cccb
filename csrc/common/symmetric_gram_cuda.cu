// The CUDA symmetric GEMM G = s·F·Fᵀ (common/symmetric_gram.h): one block per upper tile (and
// N-split and sample) writes the tile and its mirror; split N goes through an opmath workspace
// summed in split order (deterministic: no float atomics).
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>

#include <algorithm>

#include "common/cuda_split.cuh"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "common/symmetric_gram.cuh"
#include "common/symmetric_gram.h"

namespace cvops {
namespace {

using namespace gram_tiles;

// One block per (upper tile, N-split, sample). With one split, writes s·acc to the tile and its
// mirror in `out` (the features' dtype or opmath); with several, writes raw acc of the upper tile
// to workspace[split] (acc_t) for reduce_splits_kernel.
template <typename scalar_t, typename acc_t, typename out_t>
__global__ void __launch_bounds__(kThreads)
    gram_tiles_kernel(const scalar_t* __restrict__ features, out_t* __restrict__ out,
                      acc_t* __restrict__ workspace, int64_t C, int64_t N, int tiles_per_side,
                      int64_t k_chunk, acc_t scale) {
  int ti, tj;
  upper_tile(blockIdx.x, tiles_per_side, ti, tj);
  const int64_t b = blockIdx.z, split = blockIdx.y;
  const int64_t row0 = int64_t(ti) * kTile, col0 = int64_t(tj) * kTile;
  const int64_t k_begin = split * k_chunk;
  const int64_t k_end = min(N, k_begin + k_chunk);
  acc_t acc[kPerThread][kPerThread] = {};
  accumulate_tile(features + b * C * N, C, N, row0, col0, k_begin, k_end, acc);

  const bool split_mode = workspace != nullptr;
  const int64_t plane = b * C * C;
  for_each_tile_output(acc, row0, col0, C, [&](int64_t r, int64_t c, acc_t value) {
    if (split_mode) {
      workspace[(split * gridDim.z) * C * C + plane + r * C + c] = value;
    } else {
      const out_t v = static_cast<out_t>(value * scale);
      out[plane + r * C + c] = v;
      if (ti != tj) out[plane + c * C + r] = v;  // diagonal tiles hold both halves already
    }
  });
}

// out[b, r, c] = s · Σ_split workspace[split, b, r', c'] with (r', c') the upper-tile position of
// (r, c); summed in split order, so the result does not depend on scheduling.
template <typename scalar_t, typename acc_t>
__global__ void reduce_splits_kernel(const acc_t* __restrict__ workspace,
                                     scalar_t* __restrict__ out, int64_t batch, int64_t C,
                                     int splits, acc_t scale) {
  const int64_t plane = C * C, total = batch * plane;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / plane, r = (e % plane) / C, c = e % C;
    const bool upper = r / kTile <= c / kTile;
    const int64_t src = b * plane + (upper ? r * C + c : c * C + r);
    acc_t sum = 0;
    for (int s = 0; s < splits; ++s) sum += workspace[s * total + src];
    out[e] = static_cast<scalar_t>(sum * scale);
  }
}

}  // namespace

void symmetric_gram_into_cuda(const char* op, const at::Tensor& x, double scale, at::Tensor& gram) {
  c10::cuda::CUDAGuard guard(x.device());
  const auto features = x.contiguous();
  const int64_t B = features.size(0), C = features.size(1), N = features.size(2);
  const Launch l = plan_launch(op, B, C, N);
  auto stream = at::cuda::getCurrentCUDAStream();
  CVOPS_DISPATCH_FLOATING(features.scalar_type(), "cvops_gram_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const dim3 grid(static_cast<unsigned>(l.tiles), l.splits, B);
    const auto acc_options = features.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    run_split<acc_t>(
        l.splits, l.splits, B * C * C, acc_options,
        [&] {
          auto launch = [&](auto* out) {
            gram_tiles_kernel<<<grid, kThreads, 0, stream>>>(
                features.const_data_ptr<scalar_t>(), out, static_cast<acc_t*>(nullptr), C, N,
                l.tiles_per_side, l.k_chunk, static_cast<acc_t>(scale));
          };
          if (gram.scalar_type() == features.scalar_type()) {
            launch(gram.data_ptr<scalar_t>());
          } else {
            TORCH_INTERNAL_ASSERT(gram.scalar_type() == acc_options.dtype().toScalarType());
            launch(gram.data_ptr<acc_t>());
          }
        },
        [&](acc_t* workspace) {
          gram_tiles_kernel<scalar_t, acc_t, acc_t><<<grid, kThreads, 0, stream>>>(
              features.const_data_ptr<scalar_t>(), nullptr, workspace, C, N, l.tiles_per_side,
              l.k_chunk, static_cast<acc_t>(1));
        },
        [&](const acc_t* workspace) {
          const int64_t total = B * C * C;
          const int blocks =
              static_cast<int>(std::min<int64_t>(ceil_div<int64_t>(total, 256), 8 * num_sms()));
          // The split path may write an opmath Gram (style loss) or one in the input dtype.
          AT_DISPATCH_FLOATING_TYPES_AND2(
              at::kHalf, at::kBFloat16, gram.scalar_type(), "cvops_gram_reduce", [&] {
                reduce_splits_kernel<scalar_t, acc_t>
                    <<<blocks, 256, 0, stream>>>(workspace, gram.data_ptr<scalar_t>(), B, C,
                                                 l.splits, static_cast<acc_t>(scale));
              });
        });
  });
}

at::Tensor symmetric_gram_cuda(const char* op, const at::Tensor& x, double scale) {
  c10::cuda::CUDAGuard guard(x.device());
  const auto features = x.contiguous();
  auto gram = at::empty({features.size(0), features.size(1), features.size(1)}, features.options());
  symmetric_gram_into_cuda(op, features, scale, gram);
  return gram;
}

}  // namespace cvops
