#pragma once
// The gram family: Gram matrix G = s·F·Fᵀ of features F = x.reshape(B, C, N) and the Gatys style
// loss Σ(G − S)². The op bodies (gram.cpp: validation, scale, reduction) serve every device; each
// device supplies the loops below.
#include <ATen/core/Tensor.h>

#include <tuple>

#include "common/loop_table.h"

namespace cvops::gram {

// The device loops, called for B·C > 0 with features F = x.reshape(B, C, N) (any strides).
struct Loops {
  // G [B, C, C] = scale·F·Fᵀ in F's dtype (symmetric_gram_{cpu,cuda} of common/symmetric_gram.h).
  at::Tensor (*gram_matrix)(const char* op, const at::Tensor& features, double scale);
  // Per sample b, Σ_ij (G_b − S_b)² [B] (opmath or double) with S_b = target[index[b]] (bank),
  // target[b] (target_stride = C·C) or the one target (target_stride = 0); target is opmath and
  // contiguous, index int64 [B] or undefined. Also returns the symmetric residual
  // G − (S + Sᵀ)/2 [B, C, C] (opmath) when keep_residual (the CPU loop always does).
  std::tuple<at::Tensor, at::Tensor> (*style_loss)(const char* op, const at::Tensor& features,
                                                   const at::Tensor& target,
                                                   const at::Tensor& index, int64_t target_stride,
                                                   double scale, bool keep_residual);
};

LoopTable<Loops>& gram_loops();

}  // namespace cvops::gram
