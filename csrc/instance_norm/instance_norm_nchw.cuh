#pragma once
// instance_norm CUDA kernels for NCHW: each (sample, channel) plane is contiguous. One block per
// plane computes its statistics and normalises it right away, while the plane is likely still in
// L2; split planes (common/cuda_split.cuh) write per-chunk partials, then every block of a plane
// merges the same partials in the same order (so all agree) and finishes its own chunk. The
// backward has the same structure. Included by instance_norm_cuda.cu.
#include <cstdint>

#include "common/cuda_reduce.cuh"
#include "common/cuda_split.cuh"
#include "instance_norm/instance_norm_math.cuh"

namespace cvops::instance_norm {

// NCHW blocks: a power of two in [32, kPlaneMaxThreads] threads.
constexpr int kPlaneMaxThreads = 512;

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
__device__ __forceinline__ GradSums<acc_t> thread_plane_grad_sums(const scalar_t* __restrict__ dy,
                                                                  const scalar_t* __restrict__ x,
                                                                  const scalar_t* __restrict__ out,
                                                                  acc_t mean, bool relu,
                                                                  int64_t begin, int64_t end) {
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
  const auto w = block_reduce_broadcast<kPlaneMaxThreads>(
      thread_plane_stats<kVec, scalar_t, acc_t>(x + offset, 0, n));
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
    plane_partial_stats_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t chunk, int splits,
                               acc_t* __restrict__ partial_mean, acc_t* __restrict__ partial_m2) {
  const int64_t block = blockIdx.x, plane = block / splits, begin = (block % splits) * chunk;
  const auto w = block_reduce_broadcast<kPlaneMaxThreads>(
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
  merge_pieces(w, threadIdx.x, blockDim.x, splits, [&](int piece) {
    const int64_t i = plane * splits + piece;
    return Welford<acc_t>{partial_mean[i], partial_m2[i], chunk_size(piece, n, chunk)};
  });
  const auto norm =
      normalizer(block_reduce_broadcast<kPlaneMaxThreads>(w), eps, gamma[plane], beta[plane]);
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
  const auto s = block_reduce_broadcast<kPlaneMaxThreads>(
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
  const auto s = block_reduce_broadcast<kPlaneMaxThreads>(thread_plane_grad_sums<kVec>(
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
  merge_pieces(partial, threadIdx.x, blockDim.x, splits, [&](int piece) {
    const int64_t i = plane * splits + piece;
    return GradSums<acc_t>{partial_dy[i], partial_dy_xc[i]};
  });
  const auto s = block_reduce_broadcast<kPlaneMaxThreads>(partial);
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

}  // namespace cvops::instance_norm
