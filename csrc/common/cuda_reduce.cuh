#pragma once
// Warp and block reductions of the CUDA kernels, in a fixed order (shuffle tree within a warp, then
// warp 0 over the warps' results), so results do not depend on scheduling. Sums by default; an
// aggregate type T (Welford statistics, pairs of sums) supplies `combine(T&, const T&)` and
// `shfl_down(const T&, int)` next to its definition, found by argument-dependent lookup.
#include <cuda_runtime.h>

#include <type_traits>

namespace cvops {

constexpr unsigned kFullWarpMask = 0xffffffffu;
constexpr int kWarpSize = 32;

template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
__device__ __forceinline__ void combine(T& a, const T& b) {
  a += b;
}

template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
__device__ __forceinline__ T shfl_down(T value, int offset) {
  return __shfl_down_sync(kFullWarpMask, value, offset);
}

// `value` combined over the warp by a shuffle tree; valid in lane 0.
template <typename T>
__device__ __forceinline__ T warp_reduce(T value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    combine(value, shfl_down(value, offset));
  }
  return value;
}

namespace reduce_detail {

// The warps' results, combined by warp 0; valid in thread 0. The block has a multiple of 32
// threads, at most kMaxThreads; `warp_values` holds kMaxThreads / 32 slots.
template <typename T>
__device__ __forceinline__ T block_reduce_into(T value, T* warp_values) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  value = warp_reduce(value);
  if (lane == 0) warp_values[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = warp_reduce(lane < static_cast<int>(blockDim.x / kWarpSize) ? warp_values[lane] : T{});
  }
  return value;
}

}  // namespace reduce_detail

// `value` combined over the block (a multiple of 32 threads, at most kMaxThreads); the result is
// valid in thread 0. At most once per kernel: its shared slots are not guarded against the
// readers of a previous call.
template <int kMaxThreads, typename T>
__device__ __forceinline__ T block_reduce(T value) {
  static_assert(kMaxThreads % kWarpSize == 0 && kMaxThreads <= kWarpSize * kWarpSize);
  __shared__ T warp_values[kMaxThreads / kWarpSize];
  return reduce_detail::block_reduce_into(value, warp_values);
}

// The same, returned to every thread of the block. At most once per kernel.
template <int kMaxThreads, typename T>
__device__ __forceinline__ T block_reduce_broadcast(T value) {
  static_assert(kMaxThreads % kWarpSize == 0 && kMaxThreads <= kWarpSize * kWarpSize);
  __shared__ T warp_values[kMaxThreads / kWarpSize];
  value = reduce_detail::block_reduce_into(value, warp_values);
  if (threadIdx.x == 0) warp_values[0] = value;
  __syncthreads();
  return warp_values[0];
}

}  // namespace cvops
