// The device-independent half of the symmetric GEMM: its gradient, one GEMM through at::baddbmm.
#include "common/symmetric_gram.h"

#include <ATen/ops/add.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/empty.h>

#include "common/dispatch.h"

namespace cvops {

at::Tensor weight_times(const at::Tensor& weight, const at::Tensor& features, double alpha) {
  const auto f = features.to(weight.scalar_type());
  auto out = at::empty(f.sizes(), f.options());
  at::baddbmm_out(out, out, weight, f, /*beta=*/0.0, alpha);  // beta = 0: never read
  return out.to(features.scalar_type());
}

at::Tensor symmetric_gram_backward(const at::Tensor& grad_gram, const at::Tensor& features,
                                   double scale) {
  // d(s·F·Fᵀ) = s·(dG + dGᵀ)·F: one GEMM.
  const auto g = grad_gram.to(opmath_dtype(features.scalar_type()));
  return weight_times(at::add(g, g.transpose(1, 2)), features, scale);
}

}  // namespace cvops
