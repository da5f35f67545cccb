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
// gradient assembly); each device supplies only the loops no library has (Loops).
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "common/loop_table.h"

namespace cvops::bilinear {


struct EpilogueOptions {
  bool signed_sqrt;
  bool l2_normalize;
  double eps;  // inside the square root
};

// The device loops. Every tensor is contiguous; `acc` means opmath (float for half/bfloat16/float,
// double for double). Results are deterministic: fixed reduction order, no float atomics.
struct Loops {
  // G [B, C, C] = scale·F·Fᵀ for features [B, C, N], B·C > 0 (common/symmetric_gram.h), in opmath
  // or F's dtype (pooled_outer converts; a CUDA half G could overflow, so CUDA's is opmath).
  at::Tensor (*symmetric_gram)(const char* op, const at::Tensor& features, double scale);
  // GEMM operands stay in the input dtype (CUDA: half/bfloat16 tensor cores accumulating in
  // float32) or go to opmath first (CPU: MKL has no fast half GEMM).
  bool gemm_in_input_dtype;
  // Elements of a GEMM chunk's [L, d] result: big enough for efficient GEMMs, small enough that
  // the projections of all positions (B·H·W × d: 200 MB for the B-CNN layer at d = 8192) never
  // exist at once.
  int64_t gemm_chunk_elements;
  // z [R, N] acc; out [R, N] (any floating dtype, may be z itself) = L2(signed_sqrt(alpha·z)) per row;
  // norm [R] acc = ‖signed_sqrt(alpha·z)‖ per row when opts.l2_normalize (else undefined, not written).
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
  void (*tensor_sketch_backward)(const at::Tensor& grad, const at::Tensor& h1, const at::Tensor& s1,
                                 const at::Tensor& h2, const at::Tensor& s2, at::Tensor& grad_gram);
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
  void (*factorized_pool_backward)(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                   const at::Tensor& out, const at::Tensor& norm, int64_t k,
                                   bool signed_sqrt, bool l2_normalize, at::Tensor& grad_x,
                                   at::Tensor& grad_y);
};

LoopTable<Loops>& bilinear_loops();

}  // namespace cvops::bilinear
