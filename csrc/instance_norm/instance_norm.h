#pragma once
// The instance_norm family: conditional instance normalisation (Dumoulin et al.): per (sample,
// channel) statistics over H·W, then a per-sample affine γ_b, β_b chosen from S styles by index
// or mixed from them by weights, optionally followed by ReLU — in one pass over the data.
#include <ATen/core/Tensor.h>

#include "common/loop_table.h"

namespace cvops::instance_norm {

// The device loops, called only for non-empty x (B·C > 0 and H·W > 0: the ops handle empty
// inputs themselves). x [B, C, H, W] is contiguous in NCHW or in channels_last (`channels_last`
// says which); out has x's sizes, dtype and memory format. gamma, beta, mean, rstd are [B, C]
// contiguous in opmath (float for half/bfloat16/float, double for double). Statistics are biased,
// eps inside the square root: rstd = 1/sqrt(var + eps).
struct Loops {
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

LoopTable<Loops>& instance_norm_loops();

}  // namespace cvops::instance_norm
