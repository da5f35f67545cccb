#pragma once
// Shared CUDA helpers: stream/guard, launch check, sizes. Lean includes only (no torch/extension.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace cvops {

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// The most blocks a grid takes along y or z (x takes 2^31 − 1).
constexpr int64_t kMaxGridYZ = 65535;

inline int num_sms() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// Blocks for a grid-stride loop over `items` with `threads` per block: no more than the items
// need, at most 32 per SM (enough to fill the GPU), at least one.
inline unsigned grid_stride_blocks(int64_t items, int threads) {
  const int64_t wanted = ceil_div<int64_t>(items, threads);
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(wanted, 32 * int64_t(num_sms()))));
}

// Whether `kernel` runs code compiled for compute capability >= arch (80: sm_80) on the current
// device: a build that ships only older PTX JIT-compiles its older __CUDA_ARCH__ branches even on
// a newer GPU, so the device's capability alone cannot pick an sm_80+ path.
template <typename Kernel>
bool compiled_for(Kernel* kernel, int arch) {
  cudaFuncAttributes attributes;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  return attributes.ptxVersion >= arch;
}

}  // namespace cvops
