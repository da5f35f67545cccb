#pragma once
// A product rounded on its own in device code: nvcc contracts a·b + c into one FMA (-fmad=true),
// and the CPU and CUDA kernels would then disagree in the last bit. With the product rounded, the
// sum that follows has nothing to fuse with. Host code needs nothing (the build compiles C++ with
// -ffp-contract=off).
#include <c10/macros/Macros.h>

#include <type_traits>

namespace cvops {

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T mul_rn(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

}  // namespace cvops
