#pragma once
// One dispatch macro for every kernel: float32/float64 plus the half types, which the kernels
// accumulate in at::opmath_type<scalar_t> (float for half/bfloat16).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#define CVOPS_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace cvops {

// Kernels that build on at::mm work in this dtype: half types are promoted to float32.
inline at::ScalarType opmath_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

}  // namespace cvops
