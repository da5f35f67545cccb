#pragma once
// The instance_norm family: conditional instance normalisation (Dumoulin et al.): per (sample,
// channel) statistics over H·W, then a per-sample affine γ_b, β_b chosen from S styles by index
// or mixed from them by weights, optionally followed by ReLU — in one pass over the data.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <string_view>
#include <tuple>

namespace cvops::instance_norm {

// The device kernels, called only for non-empty x (B·C > 0 and H·W > 0: the ops handle empty
// inputs themselves). x [B, C, H, W] is contiguous in NCHW or in channels_last (`channels_last`
// says which); out has x's sizes, dtype and memory format. gamma, beta, mean, rstd are [B, C]
// contiguous in opmath (float for half/bfloat16/float, double for double). Statistics are biased,
// eps inside the square root: rstd = 1/sqrt(var + eps).
struct Kernels {
  void (*forward)(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, double eps,
                  bool relu, bool channels_last, at::Tensor& out, at::Tensor& mean,
                  at::Tensor& rstd);
  // grad_x has x's sizes, dtype and memory format; grad_gamma, grad_beta are [B, C] opmath:
  //   dy' = dy·[out > 0] (ReLU) or dy, x̂ = (x − mean)·rstd,
  //   grad_beta = Σ dy', grad_gamma = Σ dy'·x̂, grad_x = γ·rstd·(dy' − grad_beta/n − x̂·grad_gamma/n).
  // Deterministic: fixed reduction order, no float atomics.
  void (*backward)(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out,
                   const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& gamma,
                   bool relu, bool channels_last, at::Tensor& grad_x, at::Tensor& grad_gamma,
                   at::Tensor& grad_beta);
};

// The ops, device-generic around the kernels: validation, the per-sample γ/β (gather by index or
// mix by weights), and the reduction of dγ/dβ back to weight/bias (and to the mixing weights).
std::tuple<at::Tensor, at::Tensor, at::Tensor> conditional_instance_norm(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& style,
    double eps, std::string_view activation, const Kernels& kernels);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conditional_instance_norm_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out,
    const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& style,
    const at::Tensor& mean, const at::Tensor& rstd, std::string_view activation,
    const Kernels& kernels);

// Registers both ops for one dispatch key with that device's kernels:
//   TORCH_LIBRARY_IMPL(cvops, CPU, m) { register_ops<kCpuKernels>(m); }
template <const Kernels& kernels>
void register_ops(torch::Library& m) {
  m.impl("_conditional_instance_norm",
         [](const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
            const at::Tensor& style, double eps, c10::string_view activation) {
           return conditional_instance_norm(x, weight, bias, style, eps, activation, kernels);
         });
  m.impl("_conditional_instance_norm_backward",
         [](const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out,
            const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& style,
            const at::Tensor& mean, const at::Tensor& rstd, c10::string_view activation) {
           return conditional_instance_norm_backward(grad_out, x, out, weight, bias, style, mean,
                                                     rstd, activation, kernels);
         });
}

}  // namespace cvops::instance_norm
