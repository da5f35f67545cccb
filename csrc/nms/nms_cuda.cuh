#pragma once
// What the CUDA loops of the nms family share (nms_cuda.cu and the headers it includes): the block
// size of the element-wise kernels and the box area, rounded on its own (mul_rn) as on the CPU.
#include <cuda_runtime.h>

#include "nms/nms.h"

namespace cvops::nms {

constexpr int kThreads = 256;  // element-wise kernels

template <typename T>
__device__ __forceinline__ T box_area(T x1, T y1, T x2, T y2) {
  return mul_rn(x2 - x1, y2 - y1);
}

}  // namespace cvops::nms
