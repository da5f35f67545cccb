#pragma once
// The per-value math of the instance_norm CUDA kernels, shared by both layouts: Welford statistics
// (within a thread) and Chan's parallel merge (across threads and blocks), the gradient sums, the
// affine / ReLU / input-gradient formulas and the 16-byte packs. Included by instance_norm_cuda.cu.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_reduce.cuh"

namespace cvops::instance_norm {

constexpr int kPackBytes = 16;  // vector loads and stores when aligned

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
  return {__shfl_down_sync(kFullWarpMask, v.mean, offset),
          __shfl_down_sync(kFullWarpMask, v.m2, offset),
          __shfl_down_sync(kFullWarpMask, v.count, offset)};
}

template <typename acc_t>
__device__ __forceinline__ GradSums<acc_t> shfl_down(const GradSums<acc_t>& v, int offset) {
  return {__shfl_down_sync(kFullWarpMask, v.dy, offset),
          __shfl_down_sync(kFullWarpMask, v.dy_xc, offset)};
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

}  // namespace cvops::instance_norm
