#pragma once
// The gram family: Gram matrix G = s·F·Fᵀ of features F = x.reshape(B, C, N) and the Gatys style
// loss Σ(G − S)². Validation, scale and reduction rules are shared by the CPU and CUDA kernels.
#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <vector>

namespace cvops::gram {

struct FeatureShape {
  int64_t batch;     // B
  int64_t channels;  // C
  int64_t points;    // N = product of the spatial dims
};

enum class Reduction { kMean, kSum, kNone };

// x must be a floating [B, C, *spatial] tensor with at least one spatial dim.
FeatureShape check_features(const char* op, const at::Tensor& x);

// The factor s in G = s·F·Fᵀ: "none" → 1, "hw" → 1/N, "chw" → 1/(C·N), "value" → 1/divisor.
double resolve_scale(const char* op, std::string_view normalize, double divisor,
                     const FeatureShape& shape);

Reduction parse_reduction(const char* op, std::string_view reduction);

// target is [C, C], [B, C, C], or a bank [S, C, C] with target_index int64 [B] in [0, S).
void check_style_target(const char* op, const at::Tensor& x, const FeatureShape& shape,
                        const at::Tensor& target, const std::optional<at::Tensor>& target_index);

// Per-sample loss Σ_ij (G − S)² [B] (opmath dtype) → the reduced loss in x's dtype.
at::Tensor reduce_loss(const at::Tensor& per_sample, Reduction reduction, const FeatureShape& shape,
                       at::ScalarType out_dtype);

// Shapes of style_loss's outputs, shared with the fake kernel's rules (see cvops/ops/gram.py).
at::Tensor empty_residual(const at::Tensor& x);

// CPU: the GEMM panels of F·Fᵀ on and above the diagonal, for features [B, C, N] (contiguous,
// float or double): panels[p] = F[:, i0:i0+P]·F[:, i0:]ᵀ [B, P, C − i0] with i0 = p·P, P =
// panel_rows(C) (the last panel may have fewer rows). The gram and bilinear families build on them.
int64_t panel_rows(int64_t channels);
std::vector<at::Tensor> upper_panels(const at::Tensor& features);

// Device-generic backward ops (ATen only: symmetrise, then one GEMM through at::bmm/cuBLAS).
at::Tensor gram_matrix_backward(const at::Tensor& grad, const at::Tensor& x,
                                std::string_view normalize, double divisor);
at::Tensor style_loss_backward(const at::Tensor& grad_loss, const at::Tensor& x,
                               const at::Tensor& residual, std::string_view normalize,
                               double divisor, std::string_view reduction);

}  // namespace cvops::gram
