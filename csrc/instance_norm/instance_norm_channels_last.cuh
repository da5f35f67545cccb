#pragma once
// instance_norm CUDA kernels for channels_last: memory is [B, H·W, C]. Consecutive threads own
// consecutive channels (a 16-byte pack of them when aligned) and rows of threads walk the
// positions, so every load is coalesced; the rows are merged by a tree in shared memory, and
// positions are split over blocks (common/cuda_split.cuh) when B × channel tiles cannot fill the
// GPU, with the same two-pass merge as NCHW. Included by instance_norm_cuda.cu.
#include <cstdint>

#include "common/cuda_split.cuh"
#include "instance_norm/instance_norm_math.cuh"

namespace cvops::instance_norm {

// channels_last blocks: tile_groups (≤ kMaxTileGroups channel packs) × rows (a power of two)
// ≤ kChannelThreads threads.
constexpr int kChannelThreads = 256;
constexpr int kMaxTileGroups = 32;

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
  bool active;  // the last tile may hold fewer packs than tile_groups
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
    const scalar_t* __restrict__ x, const acc_t* __restrict__ gamma, const acc_t* __restrict__ beta,
    acc_t eps, bool relu, bool write_stats, scalar_t* __restrict__ out, acc_t* __restrict__ mean,
    acc_t* __restrict__ rstd) {
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
__device__ __forceinline__ int64_t partial_index(const ChannelsLastShape& s, const ChannelThread& t,
                                                 int64_t split) {
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
    merge_pieces(w, t.row, s.rows, s.splits, [&](int split) {
      const int64_t i = partial_index(s, t, split);
      ChannelWelford<acc_t, kVec> part;
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        part.mean[v] = partial_mean[i + v];
        part.m2[v] = partial_m2[i + v];
      }
      part.count = chunk_size(split, s.positions, s.chunk);
      return part;
    });
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
    merge_pieces(sums, t.row, s.rows, s.splits, [&](int split) {
      const int64_t i = partial_index(s, t, split);
      ChannelGradSums<acc_t, kVec> part;
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        part.dy[v] = partial_dy[i + v];
        part.dy_xc[v] = partial_dy_xc[i + v];
      }
      return part;
    });
  }
  sums = reduce_rows(sums, s, t);
  apply_channels<kVec>(sums, s, t, dy, x, out, mean, rstd, gamma, relu, t.split == 0, dx,
                       grad_gamma, grad_beta);
}


}  // namespace cvops::instance_norm
