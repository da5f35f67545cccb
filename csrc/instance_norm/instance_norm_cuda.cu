// CUDA kernels of the instance_norm family. Statistics per (sample, channel) over n = H·W in opmath
// (float for half/bfloat16/float, double for double): Welford within a thread, Chan's parallel
// merge across threads and blocks. Every reduction runs in a fixed order and there are no float
// atomics, so results do not depend on scheduling.
//
// NCHW: each plane is contiguous. One block per plane computes its statistics and normalises it
// right away, while the plane is likely still in L2. When B·C planes cannot fill the GPU, each
// plane is cut into chunks over several blocks: pass 1 writes each chunk's (mean, M2) to a
// workspace, pass 2 merges them (every block of a plane merges the same partials in the same
// order, so all agree) and normalises its own chunk.
// channels_last: memory is [B, H·W, C]. Consecutive threads own consecutive channels (a 16-byte
// pack of them when aligned) and rows of threads walk the positions, so every load is coalesced;
// the rows are merged by a tree in shared memory, and positions are split over blocks when
// B × channel tiles cannot fill the GPU, with the same two-pass merge as NCHW.
// The backward has the same structure, reducing Σdy' and Σdy'·(x − mean) instead of (mean, M2).
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>

#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "instance_norm/instance_norm.h"

namespace cvops::instance_norm {
namespace {

constexpr const char* kOp = "conditional_instance_norm";
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;
constexpr int kPackBytes = 16;              // vector loads and stores when aligned
constexpr int64_t kChunkAlign = 8;          // split chunks start on a pack boundary of every dtype
constexpr int kResidentThreadsPerSm = 2048; // what "fills the GPU" means when deciding to split
// NCHW blocks: a power of two in [32, 512] threads, about kElementsPerThread values each.
constexpr int kPlaneMinThreads = 32;
constexpr int kPlaneMaxThreads = 512;
constexpr int64_t kElementsPerThread = 16;
constexpr int64_t kMinPlaneChunk = 4096;    // smallest plane range worth a block of its own
// channels_last blocks: tile_groups (≤ 32 channel packs) × rows (a power of two) ≤ 256 threads.
constexpr int kChannelThreads = 256;
constexpr int kMaxTileGroups = 32;
constexpr int64_t kMinRowSteps = 8;         // positions per thread before positions are split

// ---------------------------------------------------------------------------------------------
// Reductions

// `count` values with this mean and sum of squared deviations m2.
template <typename acc_t>
struct Welford {
  acc_t mean, m2;
  int64_t count;
};

// Chan et al.'s parallel merge a ← a ∪ b; exact for an empty a or b.
template <typename acc_t>
__device__ __forceinline__ void combine(Welford<acc_t>& a, const Welford<acc_t>& b) {
  if (b.count == 0) return;
  const int64_t total = a.count + b.count;
  const acc_t ratio = static_cast<acc_t>(b.count) / static_cast<acc_t>(total);
  const acc_t delta = b.mean - a.mean;
  a.mean += delta * ratio;
  a.m2 += b.m2 + delta * delta * static_cast<acc_t>(a.count) * ratio;
  a.count = total;
}

// Σdy' and Σdy'·(x − mean); rstd is applied once to the second sum (x̂ = (x − mean)·rstd).
template <typename acc_t>
struct GradSums {
  acc_t dy, dy_xc;
};

template <typename acc_t>
__device__ __forceinline__ void combine(GradSums<acc_t>& a, const GradSums<acc_t>& b) {
  a.dy += b.dy;
  a.dy_xc += b.dy_xc;
}

template <typename acc_t>
__device__ __forceinline__ Welford<acc_t> shfl_down(const Welford<acc_t>& v, int offset) {
  return {__shfl_down_sync(kFullMask, v.mean, offset), __shfl_down_sync(kFullMask, v.m2, offset),
          __shfl_down_sync(kFullMask, v.count, offset)};
}

template <typename acc_t>
__device__ __forceinline__ GradSums<acc_t> shfl_down(const GradSums<acc_t>& v, int offset) {
  return {__shfl_down_sync(kFullMask, v.dy, offset), __shfl_down_sync(kFullMask, v.dy_xc, offset)};
}

template <typename T>
__device__ __forceinline__ T warp_reduce(T value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    combine(value, shfl_down(value, offset));
  }
  return value;  // valid in lane 0
}

// Combines `value` over the block (a power of two of at least 32 threads) in a fixed tree order and
// returns the result to every thread. At most once per kernel: it does not guard its shared memory
// against a previous call's readers.
template <typename T>
__device__ T block_reduce(T value) {
  __shared__ T warp_values[kPlaneMaxThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  value = warp_reduce(value);
  if (lane == 0) warp_values[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = warp_reduce(lane < static_cast<int>(blockDim.x / kWarpSize) ? warp_values[lane] : T{});
    if (lane == 0) warp_values[0] = value;
  }
  __syncthreads();
  return warp_values[0];
}

// Values per size-`chunk` piece of a range of n: the last piece may be shorter.
__device__ __forceinline__ int64_t chunk_size(int64_t piece, int64_t n, int64_t chunk) {
  return min(n, (piece + 1) * chunk) - piece * chunk;
}

template <typename acc_t>
struct Normalizer {
  acc_t mean, rstd, scale, shift;  // y = x·scale + shift
};

template <typename acc_t>
__device__ __forceinline__ Normalizer<acc_t> normalizer(const Welford<acc_t>& w, acc_t eps,
                                                        acc_t gamma, acc_t beta) {
  const acc_t var = w.m2 / static_cast<acc_t>(w.count);  // biased
  const acc_t rstd = rsqrt(var + eps);
  const acc_t scale = gamma * rstd;
  return {w.mean, rstd, scale, beta - w.mean * scale};
}

template <typename acc_t>
struct GradCoefs {
  acc_t mean, k, a, b;  // dx = k·(dy' − a − (x − mean)·b)
};

template <typename acc_t>
__device__ __forceinline__ GradCoefs<acc_t> grad_coefs(acc_t sum_dy, acc_t grad_gamma, acc_t mean,
                                                       acc_t rstd, acc_t gamma, int64_t n) {
  const acc_t count = static_cast<acc_t>(n);
  return {mean, gamma * rstd, sum_dy / count, grad_gamma * rstd / count};
}

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ scalar_t affine(scalar_t x, acc_t scale, acc_t shift, bool relu) {
  const acc_t y = static_cast<acc_t>(x) * scale + shift;
  return static_cast<scalar_t>(relu && y < acc_t(0) ? acc_t(0) : y);  // NaN passes (torch.relu)
}

// dy' of the affine output: with ReLU the gradient passes only where the output was positive.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t masked_grad(scalar_t dy, scalar_t out, bool relu) {
  return relu && !(static_cast<acc_t>(out) > acc_t(0)) ? acc_t(0) : static_cast<acc_t>(dy);
}

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ scalar_t input_grad(acc_t dy, scalar_t x, const GradCoefs<acc_t>& c) {
  return static_cast<scalar_t>(c.k * (dy - c.a - (static_cast<acc_t>(x) - c.mean) * c.b));
}

// kVec consecutive values, loaded and stored as one 16-byte access when kVec > 1.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <int kVec, typename T>
__device__ __forceinline__ Pack<T, kVec> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, kVec>*>(p);
}

template <int kVec, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, kVec>& pack) {
  *reinterpret_cast<Pack<T, kVec>*>(p) = pack;
}

// The out values are read only under ReLU, for the mask.
template <int kVec, typename T>
__device__ __forceinline__ Pack<T, kVec> load_mask_pack(const T* p, bool relu) {
  return relu ? load_pack<kVec>(p) : Pack<T, kVec>{};
}

// ---------------------------------------------------------------------------------------------
// NCHW: planes of n contiguous values. Block b of a split plane covers [split·chunk, +chunk).
// Threads stride over packs of kVec values; begin and end are multiples of kVec.

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ Welford<acc_t> thread_plane_stats(const scalar_t* __restrict__ x,
                                                             int64_t begin, int64_t end) {
  Welford<acc_t> w{0, 0, 0};
  for (int64_t i = begin + int64_t(threadIdx.x) * kVec; i < end; i += int64_t(blockDim.x) * kVec) {
    const auto pack = load_pack<kVec>(x + i);
    // Exact two-pass statistics of the pack, then one merge (one division per pack).
    acc_t v[kVec];
    acc_t sum = 0;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      v[k] = static_cast<acc_t>(pack.v[k]);
      sum += v[k];
    }
    const acc_t mean = sum / kVec;
    acc_t m2 = 0;
#pragma unroll
    for (int k = 0; k < kVec; ++k) m2 += (v[k] - mean) * (v[k] - mean);
    combine(w, Welford<acc_t>{mean, m2, kVec});
  }
  return w;
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void normalize_plane_range(const scalar_t* __restrict__ x,
                                                      scalar_t* __restrict__ out, int64_t begin,
                                                      int64_t end, const Normalizer<acc_t>& norm,
                                                      bool relu) {
  for (int64_t i = begin + int64_t(threadIdx.x) * kVec; i < end; i += int64_t(blockDim.x) * kVec) {
    const auto in = load_pack<kVec>(x + i);
    Pack<scalar_t, kVec> y;
#pragma unroll
    for (int k = 0; k < kVec; ++k) y.v[k] = affine(in.v[k], norm.scale, norm.shift, relu);
    store_pack(out + i, y);
  }
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ GradSums<acc_t> thread_plane_grad_sums(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
    const scalar_t* __restrict__ out, acc_t mean, bool relu, int64_t begin, int64_t end) {
  GradSums<acc_t> s{0, 0};
  for (int64_t i = begin + int64_t(threadIdx.x) * kVec; i < end; i += int64_t(blockDim.x) * kVec) {
    const auto g = load_pack<kVec>(dy + i);
    const auto xv = load_pack<kVec>(x + i);
    const auto o = load_mask_pack<kVec>(out + i, relu);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const acc_t d = masked_grad<acc_t>(g.v[k], o.v[k], relu);
      s.dy += d;
      s.dy_xc += d * (static_cast<acc_t>(xv.v[k]) - mean);
    }
  }
  return s;
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void apply_plane_range(const scalar_t* __restrict__ dy,
                                                  const scalar_t* __restrict__ x,
                                                  const scalar_t* __restrict__ out,
                                                  scalar_t* __restrict__ dx, int64_t begin,
                                                  int64_t end, const GradCoefs<acc_t>& c,
                                                  bool relu) {
  for (int64_t i = begin + int64_t(threadIdx.x) * kVec; i < end; i += int64_t(blockDim.x) * kVec) {
    const auto g = load_pack<kVec>(dy + i);
    const auto xv = load_pack<kVec>(x + i);
    const auto o = load_mask_pack<kVec>(out + i, relu);
    Pack<scalar_t, kVec> r;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      r.v[k] = input_grad(masked_grad<acc_t>(g.v[k], o.v[k], relu), xv.v[k], c);
    }
    store_pack(dx + i, r);
  }
}

// One block per plane: statistics, then the normalised plane.
template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPlaneMaxThreads)
    plane_forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ gamma,
                         const acc_t* __restrict__ beta, acc_t eps, bool relu, int64_t n,
                         scalar_t* __restrict__ out, acc_t* __restrict__ mean,
                         acc_t* __restrict__ rstd) {
  const int64_t plane = blockIdx.x, offset = plane * n;
  const auto w = block_reduce(thread_plane_stats<kVec, scalar_t, acc_t>(x + offset, 0, n));
  const auto norm = normalizer(w, eps, gamma[plane], beta[plane]);
  if (threadIdx.x == 0) {
    mean[plane] = norm.mean;
    rstd[plane] = norm.rstd;
  }
  normalize_plane_range<kVec>(x + offset, out + offset, 0, n, norm, relu);
}

// Split planes, pass 1: block (plane, split) writes its chunk's (mean, M2) to partial_*[block].
template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPlaneMaxThreads)
    plane_partial_stats_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t chunk,
                               int splits, acc_t* __restrict__ partial_mean,
                               acc_t* __restrict__ partial_m2) {
  const int64_t block = blockIdx.x, plane = block / splits, begin = (block % splits) * chunk;
  const auto w = block_reduce(
      thread_plane_stats<kVec, scalar_t, acc_t>(x + plane * n, begin, min(n, begin + chunk)));
  if (threadIdx.x == 0) {
    partial_mean[block] = w.mean;
    partial_m2[block] = w.m2;
  }
}

// Split planes, pass 2: merge the plane's partials, normalise this block's chunk.
template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPlaneMaxThreads)
    plane_normalize_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ gamma,
                           const acc_t* __restrict__ beta, const acc_t* __restrict__ partial_mean,
                           const acc_t* __restrict__ partial_m2, acc_t eps, bool relu, int64_t n,
                           int64_t chunk, int splits, scalar_t* __restrict__ out,
                           acc_t* __restrict__ mean, acc_t* __restrict__ rstd) {
  const int64_t block = blockIdx.x, plane = block / splits, split = block % splits;
  Welford<acc_t> w{0, 0, 0};
  for (int piece = threadIdx.x; piece < splits; piece += blockDim.x) {
    const int64_t i = plane * splits + piece;
    combine(w, Welford<acc_t>{partial_mean[i], partial_m2[i], chunk_size(piece, n, chunk)});
  }
  const auto norm = normalizer(block_reduce(w), eps, gamma[plane], beta[plane]);
  if (split == 0 && threadIdx.x == 0) {
    mean[plane] = norm.mean;
    rstd[plane] = norm.rstd;
  }
  const int64_t begin = split * chunk, offset = plane * n;
  normalize_plane_range<kVec>(x + offset, out + offset, begin, min(n, begin + chunk), norm, relu);
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPlaneMaxThreads)
    plane_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                          const scalar_t* __restrict__ out, const acc_t* __restrict__ mean,
                          const acc_t* __restrict__ rstd, const acc_t* __restrict__ gamma,
                          bool relu, int64_t n, scalar_t* __restrict__ dx,
                          acc_t* __restrict__ grad_gamma, acc_t* __restrict__ grad_beta) {
  const int64_t plane = blockIdx.x, offset = plane * n;
  const acc_t m = mean[plane], r = rstd[plane];
  const auto s = block_reduce(
      thread_plane_grad_sums<kVec>(dy + offset, x + offset, out + offset, m, relu, 0, n));
  const acc_t dgamma = s.dy_xc * r;
  if (threadIdx.x == 0) {
    grad_beta[plane] = s.dy;
    grad_gamma[plane] = dgamma;
  }
  apply_plane_range<kVec>(dy + offset, x + offset, out + offset, dx + offset, 0, n,
                          grad_coefs(s.dy, dgamma, m, r, gamma[plane], n), relu);
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPlaneMaxThreads)
    plane_partial_grad_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                              const scalar_t* __restrict__ out, const acc_t* __restrict__ mean,
                              bool relu, int64_t n, int64_t chunk, int splits,
                              acc_t* __restrict__ partial_dy, acc_t* __restrict__ partial_dy_xc) {
  const int64_t block = blockIdx.x, plane = block / splits, begin = (block % splits) * chunk;
  const int64_t offset = plane * n;
  const auto s = block_reduce(thread_plane_grad_sums<kVec>(
      dy + offset, x + offset, out + offset, mean[plane], relu, begin, min(n, begin + chunk)));
  if (threadIdx.x == 0) {
    partial_dy[block] = s.dy;
    partial_dy_xc[block] = s.dy_xc;
  }
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPlaneMaxThreads)
    plane_apply_grad_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                            const scalar_t* __restrict__ out, const acc_t* __restrict__ mean,
                            const acc_t* __restrict__ rstd, const acc_t* __restrict__ gamma,
                            const acc_t* __restrict__ partial_dy,
                            const acc_t* __restrict__ partial_dy_xc, bool relu, int64_t n,
                            int64_t chunk, int splits, scalar_t* __restrict__ dx,
                            acc_t* __restrict__ grad_gamma, acc_t* __restrict__ grad_beta) {
  const int64_t block = blockIdx.x, plane = block / splits, split = block % splits;
  GradSums<acc_t> partial{0, 0};
  for (int piece = threadIdx.x; piece < splits; piece += blockDim.x) {
    const int64_t i = plane * splits + piece;
    combine(partial, GradSums<acc_t>{partial_dy[i], partial_dy_xc[i]});
  }
  const auto s = block_reduce(partial);
  const acc_t m = mean[plane], r = rstd[plane], dgamma = s.dy_xc * r;
  if (split == 0 && threadIdx.x == 0) {
    grad_beta[plane] = s.dy;
    grad_gamma[plane] = dgamma;
  }
  const int64_t begin = split * chunk, offset = plane * n;
  apply_plane_range<kVec>(dy + offset, x + offset, out + offset, dx + offset, begin,
                          min(n, begin + chunk), grad_coefs(s.dy, dgamma, m, r, gamma[plane], n),
                          relu);
}

// ---------------------------------------------------------------------------------------------
// channels_last: element (b, p, c) at (b·n + p)·C + c. A block covers one sample, one tile of
// tile_groups channel packs and one range of positions; thread (row, tg) owns channels
// [c0, c0 + kVec) and positions begin + row, begin + row + rows, ...

struct ChannelsLastShape {
  int64_t channels, positions, chunk;    // C, n = H·W, positions per split
  int splits, tiles, tile_groups, rows;  // blocks along n; channel tiles; threads per row; rows
};

struct ChannelThread {
  int64_t sample, c0, begin, end;  // channels [c0, c0 + kVec) of `sample`, positions [begin, end)
  int split, tg, row;
  bool active;                     // the last tile may hold fewer packs than tile_groups
};

template <int kVec>
__device__ __forceinline__ ChannelThread locate(const ChannelsLastShape& s) {
  const int64_t block = blockIdx.x, sample_tile = block / s.splits;
  ChannelThread t;
  t.split = static_cast<int>(block % s.splits);
  t.tg = threadIdx.x % s.tile_groups;
  t.row = threadIdx.x / s.tile_groups;
  t.sample = sample_tile / s.tiles;
  t.c0 = ((sample_tile % s.tiles) * s.tile_groups + t.tg) * kVec;
  t.begin = t.split * s.chunk;
  t.end = min(s.positions, t.begin + s.chunk);
  t.active = t.c0 < s.channels;
  return t;
}

__device__ __forceinline__ int64_t element(const ChannelsLastShape& s, const ChannelThread& t,
                                           int64_t p) {
  return (t.sample * s.positions + p) * s.channels + t.c0;
}

// Welford statistics of kVec channels that share their count.
template <typename acc_t, int kVec>
struct ChannelWelford {
  acc_t mean[kVec], m2[kVec];
  int64_t count;
};

template <typename acc_t, int kVec>
__device__ __forceinline__ void combine(ChannelWelford<acc_t, kVec>& a,
                                        const ChannelWelford<acc_t, kVec>& b) {
  if (b.count == 0) return;
  const int64_t total = a.count + b.count;
  const acc_t ratio = static_cast<acc_t>(b.count) / static_cast<acc_t>(total);
  const acc_t weight = static_cast<acc_t>(a.count) * ratio;
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    const acc_t delta = b.mean[v] - a.mean[v];
    a.mean[v] += delta * ratio;
    a.m2[v] += b.m2[v] + delta * delta * weight;
  }
  a.count = total;
}

template <typename acc_t, int kVec>
struct ChannelGradSums {
  acc_t dy[kVec], dy_xc[kVec];
};

template <typename acc_t, int kVec>
__device__ __forceinline__ void combine(ChannelGradSums<acc_t, kVec>& a,
                                        const ChannelGradSums<acc_t, kVec>& b) {
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    a.dy[v] += b.dy[v];
    a.dy_xc[v] += b.dy_xc[v];
  }
}

// Combines `value` over the rows of the block (threads tile_groups apart) in a fixed tree order;
// the result is valid in row 0. rows is a power of two. At most once per kernel.
template <typename T>
__device__ T reduce_rows(T value, const ChannelsLastShape& s, const ChannelThread& t) {
  __shared__ T row_values[kChannelThreads];
  row_values[threadIdx.x] = value;
  __syncthreads();
  for (int stride = s.rows / 2; stride > 0; stride /= 2) {
    if (t.row < stride) {
      combine(value, row_values[threadIdx.x + stride * s.tile_groups]);
      row_values[threadIdx.x] = value;
    }
    __syncthreads();
  }
  return value;
}

// 1/count for a per-value Welford step. A few ulp of error in this weight only moves the mean by a
// few ulp of delta; the float fast path avoids the IEEE-division slow-path call, whose register
// saving around every call in the loop made the kernel spill.
__device__ __forceinline__ float reciprocal(float v) { return __fdividef(1.0f, v); }
__device__ __forceinline__ double reciprocal(double v) { return 1.0 / v; }

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ ChannelWelford<acc_t, kVec> thread_channel_stats(
    const scalar_t* __restrict__ x, const ChannelsLastShape& s, const ChannelThread& t) {
  ChannelWelford<acc_t, kVec> w{};
  if (!t.active) return w;
  for (int64_t p = t.begin + t.row; p < t.end; p += s.rows) {
    const auto pack = load_pack<kVec>(x + element(s, t, p));
    ++w.count;
    const acc_t inv_count = reciprocal(static_cast<acc_t>(w.count));
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const acc_t value = static_cast<acc_t>(pack.v[v]);
      const acc_t delta = value - w.mean[v];
      w.mean[v] += delta * inv_count;
      w.m2[v] += delta * (value - w.mean[v]);
    }
  }
  return w;
}

// From the block's merged statistics (valid in row 0): mean/rstd (when write_stats), then every
// thread normalises its positions.
template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void normalize_channels(
    const ChannelWelford<acc_t, kVec>& w, const ChannelsLastShape& s, const ChannelThread& t,
    const scalar_t* __restrict__ x, const acc_t* __restrict__ gamma,
    const acc_t* __restrict__ beta, acc_t eps, bool relu, bool write_stats,
    scalar_t* __restrict__ out, acc_t* __restrict__ mean, acc_t* __restrict__ rstd) {
  __shared__ acc_t scale_s[kMaxTileGroups * kVec], shift_s[kMaxTileGroups * kVec];
  if (t.row == 0 && t.active) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const int64_t c = t.sample * s.channels + t.c0 + v;
      const auto norm =
          normalizer(Welford<acc_t>{w.mean[v], w.m2[v], w.count}, eps, gamma[c], beta[c]);
      if (write_stats) {
        mean[c] = norm.mean;
        rstd[c] = norm.rstd;
      }
      scale_s[t.tg * kVec + v] = norm.scale;
      shift_s[t.tg * kVec + v] = norm.shift;
    }
  }
  __syncthreads();
  if (!t.active) return;
  acc_t scale[kVec], shift[kVec];
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    scale[v] = scale_s[t.tg * kVec + v];
    shift[v] = shift_s[t.tg * kVec + v];
  }
  for (int64_t p = t.begin + t.row; p < t.end; p += s.rows) {
    const int64_t e = element(s, t, p);
    const auto in = load_pack<kVec>(x + e);
    Pack<scalar_t, kVec> y;
#pragma unroll
    for (int v = 0; v < kVec; ++v) y.v[v] = affine(in.v[v], scale[v], shift[v], relu);
    store_pack(out + e, y);
  }
}

template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ ChannelGradSums<acc_t, kVec> thread_channel_grad_sums(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
    const scalar_t* __restrict__ out, const acc_t* __restrict__ mean, bool relu,
    const ChannelsLastShape& s, const ChannelThread& t) {
  ChannelGradSums<acc_t, kVec> sums{};
  if (!t.active) return sums;
  acc_t m[kVec];
#pragma unroll
  for (int v = 0; v < kVec; ++v) m[v] = mean[t.sample * s.channels + t.c0 + v];
  for (int64_t p = t.begin + t.row; p < t.end; p += s.rows) {
    const int64_t e = element(s, t, p);
    const auto g = load_pack<kVec>(dy + e);
    const auto xv = load_pack<kVec>(x + e);
    const auto o = load_mask_pack<kVec>(out + e, relu);
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const acc_t d = masked_grad<acc_t>(g.v[v], o.v[v], relu);
      sums.dy[v] += d;
      sums.dy_xc[v] += d * (static_cast<acc_t>(xv.v[v]) - m[v]);
    }
  }
  return sums;
}

// From the block's merged sums (valid in row 0): dγ, dβ (when write_grads), then every thread
// writes dx for its positions.
template <int kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void apply_channels(
    const ChannelGradSums<acc_t, kVec>& sums, const ChannelsLastShape& s, const ChannelThread& t,
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
    const scalar_t* __restrict__ out, const acc_t* __restrict__ mean,
    const acc_t* __restrict__ rstd, const acc_t* __restrict__ gamma, bool relu, bool write_grads,
    scalar_t* __restrict__ dx, acc_t* __restrict__ grad_gamma, acc_t* __restrict__ grad_beta) {
  __shared__ GradCoefs<acc_t> coefs_s[kMaxTileGroups * kVec];
  if (t.row == 0 && t.active) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const int64_t c = t.sample * s.channels + t.c0 + v;
      const acc_t dgamma = sums.dy_xc[v] * rstd[c];
      if (write_grads) {
        grad_beta[c] = sums.dy[v];
        grad_gamma[c] = dgamma;
      }
      coefs_s[t.tg * kVec + v] =
          grad_coefs(sums.dy[v], dgamma, mean[c], rstd[c], gamma[c], s.positions);
    }
  }
  __syncthreads();
  if (!t.active) return;
  GradCoefs<acc_t> coefs[kVec];
#pragma unroll
  for (int v = 0; v < kVec; ++v) coefs[v] = coefs_s[t.tg * kVec + v];
  for (int64_t p = t.begin + t.row; p < t.end; p += s.rows) {
    const int64_t e = element(s, t, p);
    const auto g = load_pack<kVec>(dy + e);
    const auto xv = load_pack<kVec>(x + e);
    const auto o = load_mask_pack<kVec>(out + e, relu);
    Pack<scalar_t, kVec> r;
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      r.v[v] = input_grad(masked_grad<acc_t>(g.v[v], o.v[v], relu), xv.v[v], coefs[v]);
    }
    store_pack(dx + e, r);
  }
}

// Partials of a split are stored at [(sample·splits + split)·C + c].
__device__ __forceinline__ int64_t partial_index(const ChannelsLastShape& s,
                                                 const ChannelThread& t, int64_t split) {
  return (t.sample * s.splits + split) * s.channels + t.c0;
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kChannelThreads)
    channels_forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ gamma,
                            const acc_t* __restrict__ beta, acc_t eps, bool relu,
                            ChannelsLastShape s, scalar_t* __restrict__ out,
                            acc_t* __restrict__ mean, acc_t* __restrict__ rstd) {
  const ChannelThread t = locate<kVec>(s);
  const auto w = reduce_rows(thread_channel_stats<kVec, scalar_t, acc_t>(x, s, t), s, t);
  normalize_channels<kVec>(w, s, t, x, gamma, beta, eps, relu, true, out, mean, rstd);
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kChannelThreads)
    channels_partial_stats_kernel(const scalar_t* __restrict__ x, ChannelsLastShape s,
                                  acc_t* __restrict__ partial_mean,
                                  acc_t* __restrict__ partial_m2) {
  const ChannelThread t = locate<kVec>(s);
  const auto w = reduce_rows(thread_channel_stats<kVec, scalar_t, acc_t>(x, s, t), s, t);
  if (t.row != 0 || !t.active) return;
  const int64_t i = partial_index(s, t, t.split);
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    partial_mean[i + v] = w.mean[v];
    partial_m2[i + v] = w.m2[v];
  }
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kChannelThreads)
    channels_normalize_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ gamma,
                              const acc_t* __restrict__ beta,
                              const acc_t* __restrict__ partial_mean,
                              const acc_t* __restrict__ partial_m2, acc_t eps, bool relu,
                              ChannelsLastShape s, scalar_t* __restrict__ out,
                              acc_t* __restrict__ mean, acc_t* __restrict__ rstd) {
  const ChannelThread t = locate<kVec>(s);
  // Row r merges the partials of splits r, r + rows, ...; then the rows are merged.
  ChannelWelford<acc_t, kVec> w{};
  if (t.active) {
    for (int split = t.row; split < s.splits; split += s.rows) {
      const int64_t i = partial_index(s, t, split);
      ChannelWelford<acc_t, kVec> part;
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        part.mean[v] = partial_mean[i + v];
        part.m2[v] = partial_m2[i + v];
      }
      part.count = chunk_size(split, s.positions, s.chunk);
      combine(w, part);
    }
  }
  w = reduce_rows(w, s, t);
  normalize_channels<kVec>(w, s, t, x, gamma, beta, eps, relu, t.split == 0, out, mean, rstd);
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kChannelThreads)
    channels_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                             const scalar_t* __restrict__ out, const acc_t* __restrict__ mean,
                             const acc_t* __restrict__ rstd, const acc_t* __restrict__ gamma,
                             bool relu, ChannelsLastShape s, scalar_t* __restrict__ dx,
                             acc_t* __restrict__ grad_gamma, acc_t* __restrict__ grad_beta) {
  const ChannelThread t = locate<kVec>(s);
  const auto sums = reduce_rows(thread_channel_grad_sums<kVec>(dy, x, out, mean, relu, s, t), s, t);
  apply_channels<kVec>(sums, s, t, dy, x, out, mean, rstd, gamma, relu, true, dx, grad_gamma,
                       grad_beta);
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kChannelThreads)
    channels_partial_grad_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                 const scalar_t* __restrict__ out, const acc_t* __restrict__ mean,
                                 bool relu, ChannelsLastShape s, acc_t* __restrict__ partial_dy,
                                 acc_t* __restrict__ partial_dy_xc) {
  const ChannelThread t = locate<kVec>(s);
  const auto sums = reduce_rows(thread_channel_grad_sums<kVec>(dy, x, out, mean, relu, s, t), s, t);
  if (t.row != 0 || !t.active) return;
  const int64_t i = partial_index(s, t, t.split);
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    partial_dy[i + v] = sums.dy[v];
    partial_dy_xc[i + v] = sums.dy_xc[v];
  }
}

template <int kVec, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kChannelThreads)
    channels_apply_grad_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                               const scalar_t* __restrict__ out, const acc_t* __restrict__ mean,
                               const acc_t* __restrict__ rstd, const acc_t* __restrict__ gamma,
                               const acc_t* __restrict__ partial_dy,
                               const acc_t* __restrict__ partial_dy_xc, bool relu,
                               ChannelsLastShape s, scalar_t* __restrict__ dx,
                               acc_t* __restrict__ grad_gamma, acc_t* __restrict__ grad_beta) {
  const ChannelThread t = locate<kVec>(s);
  ChannelGradSums<acc_t, kVec> sums{};
  if (t.active) {
    for (int split = t.row; split < s.splits; split += s.rows) {
      const int64_t i = partial_index(s, t, split);
      ChannelGradSums<acc_t, kVec> part;
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        part.dy[v] = partial_dy[i + v];
        part.dy_xc[v] = partial_dy_xc[i + v];
      }
      combine(sums, part);
    }
  }
  sums = reduce_rows(sums, s, t);
  apply_channels<kVec>(sums, s, t, dy, x, out, mean, rstd, gamma, relu, t.split == 0, dx,
                       grad_gamma, grad_beta);
}

// ---------------------------------------------------------------------------------------------
// Launch planning

int64_t pow2_ceil(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

int64_t pow2_floor(int64_t v) {
  int64_t p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

// Blocks of `threads` that occupy every SM once.
int64_t blocks_to_fill(int threads) {
  return ceil_div<int64_t>(int64_t(num_sms()) * kResidentThreadsPerSm, threads);
}

void check_grid(int64_t blocks) {
  CVOPS_CHECK(blocks <= std::numeric_limits<int>::max(), kOp,
              "too many (sample, channel) planes for the CUDA kernel (", blocks, " blocks)");
}

struct PlanePlan {
  int threads, splits;
  int64_t chunk;  // plane values per split, a multiple of kChunkAlign
};

int plane_threads(int64_t values) {
  return static_cast<int>(std::clamp<int64_t>(pow2_ceil(ceil_div(values, kElementsPerThread)),
                                              kPlaneMinThreads, kPlaneMaxThreads));
}

// One block per plane, unless B·C blocks leave SMs idle: then planes are split into chunks of at
// least kMinPlaneChunk values.
PlanePlan plan_planes(int64_t planes, int64_t n) {
  const int threads = plane_threads(n);
  const int64_t wanted = blocks_to_fill(threads);
  const int64_t max_splits = std::max<int64_t>(1, n / kMinPlaneChunk);
  const int64_t splits =
      planes >= wanted ? 1 : std::min(ceil_div(wanted, planes), max_splits);
  const int64_t chunk = ceil_div(ceil_div(n, splits), kChunkAlign) * kChunkAlign;
  PlanePlan plan{threads, static_cast<int>(ceil_div(n, chunk)), chunk};
  if (plan.splits > 1) plan.threads = plane_threads(chunk);
  check_grid(planes * plan.splits);
  return plan;
}

struct ChannelsLastPlan {
  ChannelsLastShape shape;
  int threads;
  int64_t blocks;
};

// Channel tiles of at most kMaxTileGroups packs, balanced; as many rows as fit in the block;
// positions split when B × tiles blocks leave SMs idle, keeping ≥ kMinRowSteps positions per row.
ChannelsLastPlan plan_channels_last(int64_t batch, int64_t channels, int64_t positions, int vec) {
  const int64_t groups = channels / vec;
  const int64_t tiles = ceil_div<int64_t>(groups, kMaxTileGroups);
  const int tile_groups = static_cast<int>(ceil_div(groups, tiles));
  const int rows = static_cast<int>(pow2_floor(kChannelThreads / tile_groups));
  const int threads = tile_groups * rows;
  const int64_t base = batch * tiles;
  const int64_t wanted = blocks_to_fill(threads);
  const int64_t max_splits = std::max<int64_t>(1, positions / (rows * kMinRowSteps));
  const int64_t splits = base >= wanted ? 1 : std::min(ceil_div(wanted, base), max_splits);
  const int64_t chunk = ceil_div(positions, splits);
  ChannelsLastShape shape{channels, positions, chunk, static_cast<int>(ceil_div(positions, chunk)),
                          static_cast<int>(tiles), tile_groups, rows};
  const int64_t blocks = base * shape.splits;
  check_grid(blocks);
  return {shape, threads, blocks};
}

// ---------------------------------------------------------------------------------------------
// Launchers

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
struct ForwardArgs {
  const scalar_t* x;
  const acc_t* gamma;
  const acc_t* beta;
  scalar_t* out;
  acc_t* mean;
  acc_t* rstd;
  acc_t eps;
  bool relu;
};

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
struct BackwardArgs {
  const scalar_t* dy;
  const scalar_t* x;
  const scalar_t* out;
  const acc_t* mean;
  const acc_t* rstd;
  const acc_t* gamma;
  scalar_t* dx;
  acc_t* grad_gamma;
  acc_t* grad_beta;
  bool relu;
};

template <typename scalar_t>
constexpr int pack_width() {
  return kPackBytes / sizeof(scalar_t);
}

// What every launcher needs besides the data pointers.
struct Problem {
  int64_t batch, channels, positions;  // B, C, n = H·W
  at::TensorOptions acc_options;       // for workspaces (opmath dtype, x's device)
  cudaStream_t stream;
};

template <int kVec, typename scalar_t, typename acc_t>
void forward_planes(const ForwardArgs<scalar_t>& a, const Problem& pb) {
  const int64_t planes = pb.batch * pb.channels, n = pb.positions;
  const PlanePlan p = plan_planes(planes, n);
  if (p.splits == 1) {
    plane_forward_kernel<kVec, scalar_t, acc_t>
        <<<static_cast<unsigned>(planes), p.threads, 0, pb.stream>>>(
            a.x, a.gamma, a.beta, a.eps, a.relu, n, a.out, a.mean, a.rstd);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t blocks = planes * p.splits;
  auto workspace = at::empty({2, blocks}, pb.acc_options);
  acc_t* partial_mean = workspace.data_ptr<acc_t>();
  acc_t* partial_m2 = partial_mean + blocks;
  plane_partial_stats_kernel<kVec, scalar_t, acc_t>
      <<<static_cast<unsigned>(blocks), p.threads, 0, pb.stream>>>(a.x, n, p.chunk, p.splits,
                                                                  partial_mean, partial_m2);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  plane_normalize_kernel<kVec, scalar_t, acc_t>
      <<<static_cast<unsigned>(blocks), p.threads, 0, pb.stream>>>(
          a.x, a.gamma, a.beta, partial_mean, partial_m2, a.eps, a.relu, n, p.chunk, p.splits,
          a.out, a.mean, a.rstd);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int kVec, typename scalar_t, typename acc_t>
void forward_channels_last(const ForwardArgs<scalar_t>& a, const Problem& pb) {
  const ChannelsLastPlan p = plan_channels_last(pb.batch, pb.channels, pb.positions, kVec);
  const ChannelsLastShape& s = p.shape;
  const auto grid = static_cast<unsigned>(p.blocks);
  if (s.splits == 1) {
    channels_forward_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
        a.x, a.gamma, a.beta, a.eps, a.relu, s, a.out, a.mean, a.rstd);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t partials = pb.batch * s.splits * pb.channels;
  auto workspace = at::empty({2, partials}, pb.acc_options);
  acc_t* partial_mean = workspace.data_ptr<acc_t>();
  acc_t* partial_m2 = partial_mean + partials;
  channels_partial_stats_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
      a.x, s, partial_mean, partial_m2);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  channels_normalize_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
      a.x, a.gamma, a.beta, partial_mean, partial_m2, a.eps, a.relu, s, a.out, a.mean, a.rstd);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int kVec, typename scalar_t, typename acc_t>
void backward_planes(const BackwardArgs<scalar_t>& a, const Problem& pb) {
  const int64_t planes = pb.batch * pb.channels, n = pb.positions;
  const PlanePlan p = plan_planes(planes, n);
  if (p.splits == 1) {
    plane_backward_kernel<kVec, scalar_t, acc_t>
        <<<static_cast<unsigned>(planes), p.threads, 0, pb.stream>>>(
            a.dy, a.x, a.out, a.mean, a.rstd, a.gamma, a.relu, n, a.dx, a.grad_gamma,
            a.grad_beta);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t blocks = planes * p.splits;
  auto workspace = at::empty({2, blocks}, pb.acc_options);
  acc_t* partial_dy = workspace.data_ptr<acc_t>();
  acc_t* partial_dy_xc = partial_dy + blocks;
  plane_partial_grad_kernel<kVec, scalar_t, acc_t>
      <<<static_cast<unsigned>(blocks), p.threads, 0, pb.stream>>>(
          a.dy, a.x, a.out, a.mean, a.relu, n, p.chunk, p.splits, partial_dy, partial_dy_xc);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  plane_apply_grad_kernel<kVec, scalar_t, acc_t>
      <<<static_cast<unsigned>(blocks), p.threads, 0, pb.stream>>>(
          a.dy, a.x, a.out, a.mean, a.rstd, a.gamma, partial_dy, partial_dy_xc, a.relu, n,
          p.chunk, p.splits, a.dx, a.grad_gamma, a.grad_beta);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int kVec, typename scalar_t, typename acc_t>
void backward_channels_last(const BackwardArgs<scalar_t>& a, const Problem& pb) {
  const ChannelsLastPlan p = plan_channels_last(pb.batch, pb.channels, pb.positions, kVec);
  const ChannelsLastShape& s = p.shape;
  const auto grid = static_cast<unsigned>(p.blocks);
  if (s.splits == 1) {
    channels_backward_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
        a.dy, a.x, a.out, a.mean, a.rstd, a.gamma, a.relu, s, a.dx, a.grad_gamma, a.grad_beta);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t partials = pb.batch * s.splits * pb.channels;
  auto workspace = at::empty({2, partials}, pb.acc_options);
  acc_t* partial_dy = workspace.data_ptr<acc_t>();
  acc_t* partial_dy_xc = partial_dy + partials;
  channels_partial_grad_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
      a.dy, a.x, a.out, a.mean, a.relu, s, partial_dy, partial_dy_xc);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  channels_apply_grad_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
      a.dy, a.x, a.out, a.mean, a.rstd, a.gamma, partial_dy, partial_dy_xc, a.relu, s, a.dx,
      a.grad_gamma, a.grad_beta);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// 16-byte packs need aligned pointers and rows (NCHW planes, channels_last channel runs) whose
// length is a multiple of the pack.
template <typename scalar_t>
bool use_packs(std::initializer_list<const void*> pointers, const Problem& pb,
               bool channels_last) {
  const int64_t row = channels_last ? pb.channels : pb.positions;
  return row % pack_width<scalar_t>() == 0 &&
         std::all_of(pointers.begin(), pointers.end(), [](const void* p) {
           return reinterpret_cast<std::uintptr_t>(p) % kPackBytes == 0;
         });
}

void forward_cuda(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, double eps,
                  bool relu, bool channels_last, at::Tensor& out, at::Tensor& mean,
                  at::Tensor& rstd) {
  c10::cuda::CUDAGuard guard(x.device());
  const Problem pb{x.size(0), x.size(1), x.size(2) * x.size(3), mean.options(),
                   at::cuda::getCurrentCUDAStream()};
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_instance_norm_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kWidth = pack_width<scalar_t>();
    const ForwardArgs<scalar_t> a{x.const_data_ptr<scalar_t>(), gamma.const_data_ptr<acc_t>(),
                                  beta.const_data_ptr<acc_t>(), out.data_ptr<scalar_t>(),
                                  mean.data_ptr<acc_t>(), rstd.data_ptr<acc_t>(),
                                  static_cast<acc_t>(eps), relu};
    const bool packs = use_packs<scalar_t>({a.x, a.out}, pb, channels_last);
    if (channels_last) {
      if (packs) forward_channels_last<kWidth, scalar_t, acc_t>(a, pb);
      else forward_channels_last<1, scalar_t, acc_t>(a, pb);
    } else {
      if (packs) forward_planes<kWidth, scalar_t, acc_t>(a, pb);
      else forward_planes<1, scalar_t, acc_t>(a, pb);
    }
  });
}

void backward_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out,
                   const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& gamma,
                   bool relu, bool channels_last, at::Tensor& grad_x, at::Tensor& grad_gamma,
                   at::Tensor& grad_beta) {
  c10::cuda::CUDAGuard guard(x.device());
  const Problem pb{x.size(0), x.size(1), x.size(2) * x.size(3), mean.options(),
                   at::cuda::getCurrentCUDAStream()};
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_instance_norm_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kWidth = pack_width<scalar_t>();
    const BackwardArgs<scalar_t> a{
        grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
        out.const_data_ptr<scalar_t>(),      mean.const_data_ptr<acc_t>(),
        rstd.const_data_ptr<acc_t>(),        gamma.const_data_ptr<acc_t>(),
        grad_x.data_ptr<scalar_t>(),         grad_gamma.data_ptr<acc_t>(),
        grad_beta.data_ptr<acc_t>(),         relu};
    const bool packs = use_packs<scalar_t>({a.dy, a.x, a.out, a.dx}, pb, channels_last);
    if (channels_last) {
      if (packs) backward_channels_last<kWidth, scalar_t, acc_t>(a, pb);
      else backward_channels_last<1, scalar_t, acc_t>(a, pb);
    } else {
      if (packs) backward_planes<kWidth, scalar_t, acc_t>(a, pb);
      else backward_planes<1, scalar_t, acc_t>(a, pb);
    }
  });
}

constexpr Kernels kCudaKernels{&forward_cuda, &backward_cuda};

}  // namespace

TORCH_LIBRARY_IMPL(cvops, CUDA, m) { register_ops<kCudaKernels>(m); }

}  // namespace cvops::instance_norm
