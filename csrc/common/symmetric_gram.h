#pragma once
// The symmetric GEMM G = scale·F·Fᵀ of features F [B, C, N], multiplying only the tiles on and
// above the diagonal (about half a bmm's FLOPs). The gram and bilinear families both build on it.
#include <ATen/core/Tensor.h>

#include <vector>

namespace cvops {

// CPU: the GEMM panels of F·Fᵀ on and above the diagonal for features [B, C, N] (contiguous,
// float or double): panels[p] = F[:, i0:i0+P]·F[:, i0:]ᵀ [B, P, C − i0] with i0 = p·P and
// P = gram_panel_rows(C) (the last panel may have fewer rows). Each panel is one at::bmm (MKL).
int64_t gram_panel_rows(int64_t channels);
std::vector<at::Tensor> gram_upper_panels(const at::Tensor& features);

// CPU: gram [B, C, C] (preallocated, features' dtype: float or double) = scale·F·Fᵀ, only the
// upper triangle unless `mirror`.
void symmetric_gram_into_cpu(const at::Tensor& features, double scale, bool mirror,
                             at::Tensor& gram);

// G [B, C, C] in the features' dtype for features [B, C, N] of any floating dtype (CPU computes
// in opmath; CUDA accumulates in opmath), B·C > 0. `op` names the caller in errors.
at::Tensor symmetric_gram_cpu(const char* op, const at::Tensor& features, double scale);

// Any device (ATen GEMMs): alpha·W·F [B, C, N] in F's dtype for W [B, C, C] (opmath) and
// F [B, C, N]; and the gradient of G = scale·F·Fᵀ, scale·(dG + dGᵀ)·F.
at::Tensor weight_times(const at::Tensor& weight, const at::Tensor& features, double alpha = 1.0);
at::Tensor symmetric_gram_backward(const at::Tensor& grad_gram, const at::Tensor& features,
                                   double scale);

#ifdef CVOPS_WITH_CUDA
// CUDA: gram [B, C, C] (preallocated, the features' dtype or opmath) = scale·F·Fᵀ, B·C > 0.
void symmetric_gram_into_cuda(const char* op, const at::Tensor& features, double scale,
                              at::Tensor& gram);
at::Tensor symmetric_gram_cuda(const char* op, const at::Tensor& features, double scale);
#endif

}  // namespace cvops
