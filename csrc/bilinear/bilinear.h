#pragma once
// The bilinear family: second-order pooling of two feature maps x [B, C, *spatial] and
// y [B, D, *spatial] (y = x when absent) and its compact / low-rank approximations:
//   bilinear_pool             vec(Σ_p x_p y_pᵀ)                       (full, C·D dims)
//   tensor_sketch_pool        TS(Σ_p x_p y_pᵀ) into d bins            (Gao et al., Tensor Sketch)
//   random_maclaurin_pool     Σ_p (W1ᵀx_p)∘(W2ᵀy_p)/√d               (Gao et al., Random Maclaurin)
//   factorized_bilinear_pool  sum over groups of k of x∘y             (MFB pooling stage)
//   lowrank_bilinear_score    Σ_p ‖U₊ᵀx_p‖² − ‖U₋ᵀx_p‖² per class    (Kong & Fowlkes, LRBP)
// each pooled result optionally followed by sign(z)·√(|z| + eps) and L2 normalisation (the
// "epilogue"). The ops are device-generic (validation, GEMMs through at::bmm/at::mm, chunking,
// gradient assembly); each device supplies only the loops no library has (Kernels).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace cvops::bilinear {


struct EpilogueOptions {
  bool signed_sqrt;
  bool l2_normalize;
  double eps;  // inside the square root
};

// The device loops. Every tensor is contiguous; `acc` means opmath (float for half/bfloat16/float,
// double for double). Results are deterministic: fixed reduction order, no float atomics.
struct Kernels {
  // z [R, N] acc; out [R, N] (any floating dtype, may be z itself) = L2(ssqrt(alpha·z)) per row;
  // norm [R] acc = ‖ssqrt(alpha·z)‖ per row when opts.l2_normalize (else undefined, not written).
  void (*epilogue)(const at::Tensor& z, double alpha, const EpilogueOptions& opts, at::Tensor& out,
                   at::Tensor& norm);
  // grad_z [R, N] acc = d out / d(alpha·z) · grad, from the forward's out and norm alone (the
  // signed sqrt's derivative 1/(2|u|) is read from u = out·max(norm, kNormEps)).
  void (*epilogue_backward)(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& norm,
                            bool signed_sqrt, bool l2_normalize, at::Tensor& grad_z);
  // sketch [B, d] acc (zero-filled by the caller) += Σ_{a,c} s1[a]·s2[c]·G[b, a, c] in bin
  // (h1[a] + h2[c]) mod d, for G [B, C, D] acc, h1 [C] / h2 [D] int64 in [0, d), s1 / s2 acc.
  void (*tensor_sketch)(const at::Tensor& gram, const at::Tensor& h1, const at::Tensor& s1,
                        const at::Tensor& h2, const at::Tensor& s2, at::Tensor& sketch);
  // Optional (null where the device has none): the same sketch for y = x straight from the
  // features [B, C, N] (acc, contiguous) with G = F·Fᵀ unscaled, reading only G's upper triangle.
  void (*symmetric_tensor_sketch)(const at::Tensor& features, const at::Tensor& h1,
                                  const at::Tensor& s1, const at::Tensor& h2, const at::Tensor& s2,
                                  at::Tensor& sketch);
  // grad_gram [B, C, D] acc = s1[a]·s2[c]·grad[b, (h1[a] + h2[c]) mod d] (the transpose: a gather).
  void (*tensor_sketch_backward)(const at::Tensor& grad, const at::Tensor& h1,
                                 const at::Tensor& s1, const at::Tensor& h2,
                                 const at::Tensor& s2, at::Tensor& grad_gram);
  // out [B, K] acc += Σ_j σ_j·a[r, k·group + j]·b[r, k·group + j] over the rows r of a chunk
  // a, b [L, K·group] (same dtype, b may be a), row r belonging to sample (row0 + r) / rows_per_sample;
  // σ_j = +1 for j < num_positive, else −1. Rows are added in order for each (sample, k).
  void (*segment_product_sum)(const at::Tensor& a, const at::Tensor& b, int64_t row0,
                              int64_t rows_per_sample, int64_t group, int64_t num_positive,
                              at::Tensor& out);
  // x, y [B, k·o] (same dtype) → out [B, o] (x's dtype) = epilogue(Σ_{i<k} x[b, j·k+i]·y[b, j·k+i]).
  void (*factorized_pool)(const at::Tensor& x, const at::Tensor& y, int64_t k,
                          const EpilogueOptions& opts, at::Tensor& out, at::Tensor& norm);
  // grad_x, grad_y [B, k·o] (x's dtype) from grad [B, o] and the forward's out and norm.
  void (*factorized_pool_backward)(const at::Tensor& grad, const at::Tensor& x,
                                   const at::Tensor& y, const at::Tensor& out,
                                   const at::Tensor& norm, int64_t k, bool signed_sqrt,
                                   bool l2_normalize, at::Tensor& grad_x, at::Tensor& grad_y);
};

using OptTensor = std::optional<at::Tensor>;
using TensorPair = std::tuple<at::Tensor, at::Tensor>;

TensorPair bilinear_pool(const at::Tensor& x, const OptTensor& y, std::string_view reduce,
                         bool signed_sqrt, bool l2_normalize, double eps, const Kernels& kernels);
TensorPair bilinear_pool_backward(const at::Tensor& grad, const at::Tensor& x, const OptTensor& y,
                                  const at::Tensor& out, const at::Tensor& norm,
                                  std::string_view reduce, bool signed_sqrt, bool l2_normalize,
                                  const Kernels& kernels);
TensorPair tensor_sketch_pool(const at::Tensor& x, const OptTensor& y, const at::Tensor& h1,
                              const at::Tensor& s1, const at::Tensor& h2, const at::Tensor& s2,
                              int64_t output_dim, std::string_view reduce, bool signed_sqrt,
                              bool l2_normalize, double eps, const Kernels& kernels);
TensorPair tensor_sketch_pool_backward(const at::Tensor& grad, const at::Tensor& x,
                                       const OptTensor& y, const at::Tensor& h1,
                                       const at::Tensor& s1, const at::Tensor& h2,
                                       const at::Tensor& s2, const at::Tensor& out,
                                       const at::Tensor& norm, std::string_view reduce,
                                       bool signed_sqrt, bool l2_normalize,
                                       const Kernels& kernels);
TensorPair random_maclaurin_pool(const at::Tensor& x, const OptTensor& y, const at::Tensor& w1,
                                 const at::Tensor& w2, std::string_view reduce, bool signed_sqrt,
                                 bool l2_normalize, double eps, const Kernels& kernels);
TensorPair random_maclaurin_pool_backward(const at::Tensor& grad, const at::Tensor& x,
                                          const OptTensor& y, const at::Tensor& w1,
                                          const at::Tensor& w2, const at::Tensor& out,
                                          const at::Tensor& norm, std::string_view reduce,
                                          bool signed_sqrt, bool l2_normalize,
                                          const Kernels& kernels);
TensorPair factorized_bilinear_pool(const at::Tensor& x, const at::Tensor& y, int64_t k,
                                    bool signed_sqrt, bool l2_normalize, double eps,
                                    const Kernels& kernels);
TensorPair factorized_bilinear_pool_backward(const at::Tensor& grad, const at::Tensor& x,
                                             const at::Tensor& y, const at::Tensor& out,
                                             const at::Tensor& norm, int64_t k, bool signed_sqrt,
                                             bool l2_normalize, const Kernels& kernels);
at::Tensor lowrank_bilinear_score(const at::Tensor& x, const at::Tensor& u, int64_t num_positive,
                                  const Kernels& kernels);
TensorPair lowrank_bilinear_score_backward(const at::Tensor& grad, const at::Tensor& x,
                                           const at::Tensor& u, int64_t num_positive,
                                           const Kernels& kernels);

// Registers the family's ops for one dispatch key with that device's loops:
//   TORCH_LIBRARY_IMPL(cvops, CPU, m) { register_ops<kCpuKernels>(m); }
template <const Kernels& kernels>
void register_ops(torch::Library& m) {
  m.impl("_bilinear_pool", [](const at::Tensor& x, const OptTensor& y, c10::string_view reduce,
                             bool signed_sqrt, bool l2_normalize, double eps) {
    return bilinear_pool(x, y, reduce, signed_sqrt, l2_normalize, eps, kernels);
  });
  m.impl("_bilinear_pool_backward",
         [](const at::Tensor& grad, const at::Tensor& x, const OptTensor& y, const at::Tensor& out,
            const at::Tensor& norm, c10::string_view reduce, bool signed_sqrt, bool l2_normalize) {
           return bilinear_pool_backward(grad, x, y, out, norm, reduce, signed_sqrt, l2_normalize,
                                         kernels);
         });
  m.impl("_compact_bilinear_pool_ts",
         [](const at::Tensor& x, const OptTensor& y, const at::Tensor& h1, const at::Tensor& s1,
            const at::Tensor& h2, const at::Tensor& s2, int64_t output_dim,
            c10::string_view reduce, bool signed_sqrt, bool l2_normalize, double eps) {
           return tensor_sketch_pool(x, y, h1, s1, h2, s2, output_dim, reduce, signed_sqrt,
                                     l2_normalize, eps, kernels);
         });
  m.impl("_compact_bilinear_pool_ts_backward",
         [](const at::Tensor& grad, const at::Tensor& x, const OptTensor& y, const at::Tensor& h1,
            const at::Tensor& s1, const at::Tensor& h2, const at::Tensor& s2,
            const at::Tensor& out, const at::Tensor& norm, c10::string_view reduce,
            bool signed_sqrt, bool l2_normalize) {
           return tensor_sketch_pool_backward(grad, x, y, h1, s1, h2, s2, out, norm, reduce,
                                              signed_sqrt, l2_normalize, kernels);
         });
  m.impl("_compact_bilinear_pool_rm",
         [](const at::Tensor& x, const OptTensor& y, const at::Tensor& w1, const at::Tensor& w2,
            c10::string_view reduce, bool signed_sqrt, bool l2_normalize, double eps) {
           return random_maclaurin_pool(x, y, w1, w2, reduce, signed_sqrt, l2_normalize, eps,
                                        kernels);
         });
  m.impl("_compact_bilinear_pool_rm_backward",
         [](const at::Tensor& grad, const at::Tensor& x, const OptTensor& y, const at::Tensor& w1,
            const at::Tensor& w2, const at::Tensor& out, const at::Tensor& norm,
            c10::string_view reduce, bool signed_sqrt, bool l2_normalize) {
           return random_maclaurin_pool_backward(grad, x, y, w1, w2, out, norm, reduce,
                                                 signed_sqrt, l2_normalize, kernels);
         });
  m.impl("_factorized_bilinear_pool", [](const at::Tensor& x, const at::Tensor& y, int64_t k,
                                        bool signed_sqrt, bool l2_normalize, double eps) {
    return factorized_bilinear_pool(x, y, k, signed_sqrt, l2_normalize, eps, kernels);
  });
  m.impl("_factorized_bilinear_pool_backward",
         [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
            const at::Tensor& out, const at::Tensor& norm, int64_t k, bool signed_sqrt,
            bool l2_normalize) {
           return factorized_bilinear_pool_backward(grad, x, y, out, norm, k, signed_sqrt,
                                                    l2_normalize, kernels);
         });
  m.impl("lowrank_bilinear_score",
         [](const at::Tensor& x, const at::Tensor& u, int64_t num_positive) {
           return lowrank_bilinear_score(x, u, num_positive, kernels);
         });
  m.impl("_lowrank_bilinear_score_backward",
         [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& u,
            int64_t num_positive) {
           return lowrank_bilinear_score_backward(grad, x, u, num_positive, kernels);
         });
}

}  // namespace cvops::bilinear
