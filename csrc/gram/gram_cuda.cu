// CUDA kernels of the gram family. G = s·F·Fᵀ is symmetric, so one block computes one 64×64 tile
// on or above the diagonal (half the FLOPs of a bmm) and writes it and its mirror. Accumulation is
// in opmath (float for half/bfloat16/float, double for double). When B·tiles cannot fill the GPU,
// the reduction over N is split across blocks into a workspace, summed in a fixed order
// (deterministic: no float atomics). The style loss reduces (G − S)² in the tile epilogue, so G is
// never written unless the residual is kept for the backward.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "gram/gram.h"

namespace cvops::gram {
namespace {

constexpr int kTile = 64;             // output tile is kTile × kTile
constexpr int kTileK = 16;            // N-chunk staged in shared memory per step
constexpr int kThreadsSide = 8;       // 8 × 8 threads ...
constexpr int kThreads = kThreadsSide * kThreadsSide;
constexpr int kPerThread = kTile / kThreadsSide;  // ... each computing 8 × 8 outputs
constexpr int kBlocksPerSm = 4;       // blocks wanted per SM before N is split
constexpr int kMinChunk = 256;        // smallest N-range worth a block of its own

// The t-th tile of the upper triangle (row-major over pairs ti <= tj) of an nt × nt tile grid.
__device__ __forceinline__ void upper_tile(int t, int nt, int& ti, int& tj) {
  ti = 0;
  while (t >= nt - ti) {
    t -= nt - ti;
    ++ti;
  }
  tj = ti + t;
}

// acc[i][j] += Σ_{k in [k_begin, k_end)} F[row0 + ty + 8i, k] · F[col0 + tx + 8j, k]
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void accumulate_tile(const scalar_t* __restrict__ f, int64_t C,
                                                int64_t N, int64_t row0, int64_t col0,
                                                int64_t k_begin, int64_t k_end,
                                                acc_t (&acc)[kPerThread][kPerThread]) {
  // k-major staging (+1 pad against bank conflicts) so the inner loop reads rows broadcast.
  __shared__ acc_t rows_s[kTileK][kTile + 1];
  __shared__ acc_t cols_s[kTileK][kTile + 1];
  const int tid = threadIdx.x;
  const int tx = tid % kThreadsSide, ty = tid / kThreadsSide;
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    // 64 rows × 16 k per panel; 16 consecutive threads read one row's run of k.
#pragma unroll
    for (int l = 0; l < (kTile * kTileK) / kThreads; ++l) {
      const int e = tid + l * kThreads;
      const int r = e / kTileK, k = e % kTileK;
      const int64_t kk = k0 + k;
      const bool k_ok = kk < k_end;
      const int64_t gr = row0 + r, gc = col0 + r;
      rows_s[k][r] = (k_ok && gr < C) ? static_cast<acc_t>(f[gr * N + kk]) : acc_t(0);
      cols_s[k][r] = (k_ok && gc < C) ? static_cast<acc_t>(f[gc * N + kk]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTileK; ++k) {
      acc_t a[kPerThread], b[kPerThread];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        a[i] = rows_s[k][ty + kThreadsSide * i];
        b[i] = cols_s[k][tx + kThreadsSide * i];
      }
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    __syncthreads();
  }
}

// One block per (upper tile, N-split, sample). With one split, writes s·acc to the tile and its
// mirror in `out` (dtype scalar_t); with several, writes raw acc of the upper tile to
// workspace[split] (acc_t) for reduce_splits_kernel.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    gram_tiles_kernel(const scalar_t* __restrict__ features, scalar_t* __restrict__ out,
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

  const int tx = threadIdx.x % kThreadsSide, ty = threadIdx.x / kThreadsSide;
  const bool split_mode = workspace != nullptr;
  const int64_t plane = b * C * C;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t r = row0 + ty + kThreadsSide * i;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t c = col0 + tx + kThreadsSide * j;
      if (r >= C || c >= C) continue;
      if (split_mode) {
        workspace[(split * gridDim.z) * C * C + plane + r * C + c] = acc[i][j];
      } else {
        const scalar_t v = static_cast<scalar_t>(acc[i][j] * scale);
        out[plane + r * C + c] = v;
        if (ti != tj) out[plane + c * C + r] = v;  // diagonal tiles hold both halves already
      }
    }
  }
}

// out[b, r, c] = s · Σ_split workspace[split, b, r', c'] with (r', c') the upper-tile position of
// (r, c); summed in split order, so the result does not depend on scheduling.
template <typename scalar_t, typename acc_t>
__global__ void reduce_splits_kernel(const acc_t* __restrict__ workspace, scalar_t* __restrict__ out,
                                     int64_t batch, int64_t C, int splits, acc_t scale) {
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

// Sum of `value` over the block, in a fixed order; the result is valid in thread 0.
template <typename acc_t>
__device__ acc_t block_sum(acc_t value) {
  __shared__ acc_t warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  acc_t total = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  }
  return total;
}

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
  const int tx = threadIdx.x % kThreadsSide, ty = threadIdx.x / kThreadsSide;
  acc_t partial = 0;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t r = row0 + ty + kThreadsSide * i;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t c = col0 + tx + kThreadsSide * j;
      if (r >= C || c >= C) continue;
      const acc_t g = acc[i][j] * scale;
      const acc_t upper = g - s[r * C + c], lower = g - s[c * C + r];
      // Diagonal tiles hold both (r, c) and (c, r): count each element once there.
      partial += ti == tj ? upper * upper : upper * upper + lower * lower;
      if (residual) {
        const acc_t symmetric = acc_t(0.5) * (upper + lower);
        residual[plane + r * C + c] = symmetric;
        if (ti != tj) residual[plane + c * C + r] = symmetric;
      }
    }
  }
  const acc_t total = block_sum(partial);
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
  const acc_t total = block_sum(partial);
  if (threadIdx.x == 0) block_loss[b * gridDim.x + blockIdx.x] = total;
}

struct Launch {
  int tiles_per_side;
  int64_t tiles;   // upper-triangle tiles per sample
  int splits;      // blocks along N
  int64_t k_chunk; // N-range of one split, a multiple of kTileK
};

// Split N only when B·tiles blocks would leave SMs idle.
Launch plan_launch(const FeatureShape& shape) {
  Launch l;
  l.tiles_per_side = static_cast<int>(ceil_div<int64_t>(shape.channels, kTile));
  l.tiles = int64_t(l.tiles_per_side) * (l.tiles_per_side + 1) / 2;
  const int64_t blocks = shape.batch * l.tiles;
  const int64_t wanted = ceil_div<int64_t>(int64_t(kBlocksPerSm) * num_sms(), std::max<int64_t>(blocks, 1));
  const int64_t points = std::max<int64_t>(shape.points, 1);  // N = 0 still plans one split
  const int64_t max_splits = std::max<int64_t>(1, points / kMinChunk);
  l.splits = static_cast<int>(std::min<int64_t>({wanted, max_splits, 64}));
  l.k_chunk = ceil_div<int64_t>(ceil_div<int64_t>(points, l.splits), kTileK) * kTileK;
  l.splits = static_cast<int>(ceil_div<int64_t>(points, l.k_chunk));
  return l;
}

void check_grid(const char* op, const FeatureShape& shape, const Launch& l) {
  CVOPS_CHECK(shape.batch <= 65535, op, "the CUDA kernel takes at most 65535 samples, got B = ",
              shape.batch);
  CVOPS_CHECK(l.tiles <= std::numeric_limits<int>::max(), op, "too many channels for the CUDA kernel, got C = ",
              shape.channels);
}

// gram [B, C, C] (dtype of `features`, or opmath if gram is opmath) = scale·F·Fᵀ.
void launch_gram(const at::Tensor& features, const FeatureShape& shape, double scale,
                 at::Tensor& gram, const char* op) {
  const Launch l = plan_launch(shape);
  check_grid(op, shape, l);
  auto stream = at::cuda::getCurrentCUDAStream();
  CVOPS_DISPATCH_FLOATING(features.scalar_type(), "cvops_gram_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const dim3 grid(static_cast<unsigned>(l.tiles), l.splits, shape.batch);
    if (l.splits == 1) {
      TORCH_INTERNAL_ASSERT(gram.scalar_type() == features.scalar_type());
      gram_tiles_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
          features.data_ptr<scalar_t>(), gram.data_ptr<scalar_t>(), nullptr, shape.channels,
          shape.points, l.tiles_per_side, l.k_chunk, static_cast<acc_t>(scale));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    auto workspace = at::empty({l.splits, shape.batch, shape.channels, shape.channels},
                               features.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    gram_tiles_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        features.data_ptr<scalar_t>(), nullptr, workspace.data_ptr<acc_t>(), shape.channels,
        shape.points, l.tiles_per_side, l.k_chunk, static_cast<acc_t>(1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t total = shape.batch * shape.channels * shape.channels;
    const int blocks = static_cast<int>(std::min<int64_t>(ceil_div<int64_t>(total, 256), 8 * num_sms()));
    // The split path may write an opmath Gram (style loss) or one in the input dtype.
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gram.scalar_type(), "cvops_gram_reduce", [&] {
      reduce_splits_kernel<scalar_t, acc_t><<<blocks, 256, 0, stream>>>(
          workspace.data_ptr<acc_t>(), gram.data_ptr<scalar_t>(), shape.batch, shape.channels,
          l.splits, static_cast<acc_t>(scale));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor gram_matrix_cuda(const at::Tensor& x, std::string_view normalize, double divisor) {
  constexpr const char* op = "gram_matrix";
  const auto shape = check_features(op, x);
  const double scale = resolve_scale(op, normalize, divisor, shape);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t C = shape.channels;
  if (shape.points == 0 || shape.batch * C == 0) return at::zeros({shape.batch, C, C}, x.options());
  const auto features = x.reshape({shape.batch, C, shape.points}).contiguous();
  auto gram = at::empty({shape.batch, C, C}, x.options());
  launch_gram(features, shape, scale, gram, op);
  return gram;
}

std::tuple<at::Tensor, at::Tensor> style_loss_cuda(const at::Tensor& x, const at::Tensor& target,
                                                   const std::optional<at::Tensor>& target_index,
                                                   std::string_view normalize, double divisor,
                                                   std::string_view reduction, bool keep_residual) {
  constexpr const char* op = "style_loss";
  const auto shape = check_features(op, x);
  const double scale = resolve_scale(op, normalize, divisor, shape);
  const auto mode = parse_reduction(op, reduction);
  check_style_target(op, x, shape, target, target_index);
  c10::cuda::CUDAGuard guard(x.device());

  const int64_t B = shape.batch, C = shape.channels;
  const auto opmath = opmath_dtype(x.scalar_type());
  const auto features = x.reshape({B, C, shape.points}).contiguous();
  const auto target_m = target.to(opmath).contiguous();
  const auto index = target_index.has_value() ? target_index->contiguous() : at::Tensor();
  const int64_t* index_ptr = index.defined() ? index.data_ptr<int64_t>() : nullptr;
  const int64_t target_stride = target.dim() == 3 ? C * C : 0;
  if (B * C == 0) {
    auto per_sample = at::zeros({B}, x.options().dtype(opmath));
    return {reduce_loss(per_sample, mode, shape, x.scalar_type()),
            keep_residual ? at::empty({B, C, C}, per_sample.options()) : empty_residual(x)};
  }

  const Launch l = plan_launch(shape);
  check_grid(op, shape, l);
  auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor residual, partial_loss;
  if (l.splits == 1 && shape.points > 0) {
    residual = keep_residual ? at::empty({B, C, C}, x.options().dtype(opmath)) : at::Tensor();
    partial_loss = at::empty({B, l.tiles}, x.options().dtype(opmath));
    CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_style_loss_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      style_loss_tiles_kernel<scalar_t, acc_t><<<dim3(static_cast<unsigned>(l.tiles), 1, B), kThreads, 0, stream>>>(
          features.data_ptr<scalar_t>(), target_m.data_ptr<acc_t>(), index_ptr, target_stride,
          residual.defined() ? residual.data_ptr<acc_t>() : nullptr,
          partial_loss.data_ptr<acc_t>(), C, shape.points, l.tiles_per_side,
          static_cast<acc_t>(scale));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  } else {
    // Few, long planes: split-N Gram into an opmath buffer, then residual and loss from it.
    auto gram = at::empty({B, C, C}, x.options().dtype(opmath));
    if (shape.points == 0) gram.zero_();
    else launch_gram(features, shape, scale, gram, op);
    residual = at::empty_like(gram);
    const int blocks = static_cast<int>(std::min<int64_t>(ceil_div<int64_t>(C * C, kThreads), 64));
    partial_loss = at::empty({B, blocks}, gram.options());
    AT_DISPATCH_FLOATING_TYPES(opmath, "cvops_style_residual_cuda", [&] {
      residual_loss_kernel<scalar_t><<<dim3(blocks, B), kThreads, 0, stream>>>(
          gram.data_ptr<scalar_t>(), target_m.data_ptr<scalar_t>(), index_ptr, target_stride,
          residual.data_ptr<scalar_t>(), partial_loss.data_ptr<scalar_t>(), C);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  auto loss = reduce_loss(partial_loss.sum(1), mode, shape, x.scalar_type());
  return {loss, keep_residual ? residual : empty_residual(x)};
}

}  // namespace

TORCH_LIBRARY_IMPL(cvops, CUDA, m) {
  m.impl("gram_matrix", &gram_matrix_cuda);
  m.impl("_gram_matrix_backward", &gram_matrix_backward);
  m.impl("_style_loss", &style_loss_cuda);
  m.impl("_style_loss_backward", &style_loss_backward);
}

}  // namespace cvops::gram
