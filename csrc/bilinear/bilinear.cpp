// Schemas of the bilinear family and its op bodies, for every device: validation, the pooled
// outer product G = Σ_p x_p y_pᵀ (the symmetric GEMM when y = x, else one at::bmm), GEMM chunking
// for the projected pools, and the assembly of gradients. The device loops are in Loops.
#include "bilinear/bilinear.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/symmetric_gram.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  // Each pooling op returns (out, norm): norm [B] (opmath dtype) is the L2 norm before
  // normalisation, kept for the backward (an empty tensor when l2_normalize is off).
  m.def(
      "_bilinear_pool(Tensor x, Tensor? y, str normalize, bool signed_sqrt, bool l2_normalize, "
      "float eps) -> (Tensor, Tensor)");
  m.def(
      "_bilinear_pool_backward(Tensor grad, Tensor x, Tensor? y, Tensor out, Tensor norm, "
      "str normalize, bool signed_sqrt, bool l2_normalize) -> (Tensor, Tensor)");
  m.def(
      "_compact_bilinear_pool_ts(Tensor x, Tensor? y, Tensor h1, Tensor s1, Tensor h2, Tensor s2, "
      "int output_dim, str normalize, bool signed_sqrt, bool l2_normalize, float eps) "
      "-> (Tensor, Tensor)");
  m.def(
      "_compact_bilinear_pool_ts_backward(Tensor grad, Tensor x, Tensor? y, Tensor h1, Tensor s1, "
      "Tensor h2, Tensor s2, Tensor out, Tensor norm, str normalize, bool signed_sqrt, "
      "bool l2_normalize) -> (Tensor, Tensor)");
  m.def(
      "_compact_bilinear_pool_rm(Tensor x, Tensor? y, Tensor w1, Tensor w2, str normalize, "
      "bool signed_sqrt, bool l2_normalize, float eps) -> (Tensor, Tensor)");
  m.def(
      "_compact_bilinear_pool_rm_backward(Tensor grad, Tensor x, Tensor? y, Tensor w1, Tensor w2, "
      "Tensor out, Tensor norm, str normalize, bool signed_sqrt, bool l2_normalize) "
      "-> (Tensor, Tensor)");
  m.def(
      "_factorized_bilinear_pool(Tensor x, Tensor y, int k, bool signed_sqrt, bool l2_normalize, "
      "float eps) -> (Tensor, Tensor)");
  m.def(
      "_factorized_bilinear_pool_backward(Tensor grad, Tensor x, Tensor y, Tensor out, "
      "Tensor norm, int k, bool signed_sqrt, bool l2_normalize) -> (Tensor, Tensor)");
  m.def("lowrank_bilinear_score(Tensor x, Tensor U, int num_positive) -> Tensor");
  m.def(
      "_lowrank_bilinear_score_backward(Tensor grad, Tensor x, Tensor U, int num_positive) "
      "-> (Tensor, Tensor)");
}

namespace cvops::bilinear {
namespace {

using OptTensor = std::optional<at::Tensor>;
using TensorPair = std::tuple<at::Tensor, at::Tensor>;

constexpr int64_t kMinChunkRows = 32;

// x [B, C, *spatial] (or [B, C]: one position) and optional y [B, D, *spatial] as feature
// matrices [B, C, N], [B, D, N].
struct Pair {
  int64_t batch, c, d, points;
  at::Tensor fx, fy;  // fy undefined when y is absent (y = x)
};

int64_t count_points(const at::Tensor& t) {
  int64_t n = 1;
  for (int64_t i = 2; i < t.dim(); ++i) n *= t.size(i);
  return n;
}

void check_features(const char* op, const char* name, const at::Tensor& t) {
  check_min_dim(op, name, t, 2, "[B, C, *spatial]");
  check_floating(op, name, t);
}

Pair check_pair(const char* op, const at::Tensor& x, const OptTensor& y) {
  check_features(op, "x", x);
  Pair p{x.size(0), x.size(1), x.size(1), count_points(x), {}, {}};
  p.fx = x.reshape({p.batch, p.c, p.points});
  if (y.has_value()) {
    const at::Tensor& t = *y;
    check_features(op, "y", t);
    check_same_device(op, "y", t, "x", x);
    CVOPS_CHECK(t.scalar_type() == x.scalar_type(), op, "y must have x's dtype ", x.scalar_type(),
                ", got ", t.scalar_type());
    if (t.dim() != x.dim() || t.size(0) != x.size(0) || t.sizes().slice(2) != x.sizes().slice(2)) {
      std::string want = "[" + std::to_string(x.size(0)) + ", D";
      for (int64_t i = 2; i < x.dim(); ++i) want += ", " + std::to_string(x.size(i));
      CVOPS_CHECK(false, op, "y must have x's batch and spatial sizes ", want, "], got shape ",
                  t.sizes());
    }
    p.d = t.size(1);
    p.fy = t.reshape({p.batch, p.d, p.points});
  }
  return p;
}

enum class Reduce { kMean, kSum };

Reduce parse_reduce(const char* op, std::string_view reduce) {
  if (reduce == "hw") return Reduce::kMean;
  if (reduce == "none") return Reduce::kSum;
  CVOPS_CHECK(false, op, "normalize must be 'hw' or 'none', got '", std::string(reduce), "'");
  return Reduce::kMean;
}

// 1/N for "mean" (1 for an empty map: the sum is 0 anyway).
double reduce_scale(Reduce reduce, int64_t points) {
  return reduce == Reduce::kMean && points > 0 ? 1.0 / static_cast<double>(points) : 1.0;
}

at::ScalarType acc_dtype(const at::Tensor& t) { return opmath_dtype(t.scalar_type()); }

EpilogueOptions check_epilogue(const char* op, const at::Tensor& x, bool signed_sqrt,
                               bool l2_normalize, double eps) {
  check_eps(op, eps, acc_dtype(x));
  return {signed_sqrt, l2_normalize, eps};
}

// Features for a GEMM on this device (Loops::gemm_in_input_dtype).
at::Tensor gemm_operand(const at::Tensor& t, const Loops& loops) {
  return loops.gemm_in_input_dtype ? t : t.to(acc_dtype(t));
}

// G [B, C, D] in opmath with G·alpha = Σ_p x_p y_pᵀ · scale. y = x goes through the symmetric
// GEMM (common/symmetric_gram.h: upper-triangle tiles only, about half the FLOPs of a bmm),
// which applies the scale itself (alpha = 1).
std::pair<at::Tensor, double> pooled_outer(const char* op, const Pair& p, Reduce reduce,
                                           const Loops& loops) {
  const auto opmath = acc_dtype(p.fx);
  const double scale = reduce_scale(reduce, p.points);
  if (p.points == 0 || p.batch == 0 || p.c == 0 || p.d == 0) {
    return {at::zeros({p.batch, p.c, p.d}, p.fx.options().dtype(opmath)), 1.0};
  }
  if (!p.fy.defined()) {
    const auto g = loops.symmetric_gram(op, gemm_operand(p.fx, loops), scale);
    return {g.to(opmath).contiguous(), 1.0};
  }
  const auto a = gemm_operand(p.fx, loops), b = gemm_operand(p.fy, loops).transpose(1, 2);
  if (a.scalar_type() != opmath) return {at::bmm(a, b, opmath), scale};  // fp32 out (CUDA)
  return {at::bmm(a, b), scale};
}

// x's (and y's) gradients from grad_G [B, C, D] (opmath) for G = scale·Σ_p x_p y_pᵀ.
TensorPair pooled_outer_backward(const at::Tensor& grad_g, const at::Tensor& x, const OptTensor& y,
                                 const Pair& p, Reduce reduce) {
  if (!p.fy.defined()) {
    const double scale = reduce_scale(reduce, p.points);
    auto gx = symmetric_gram_backward(grad_g, p.fx, scale);
    return {gx.view(x.sizes()), at::empty({0}, x.options())};
  }
  const double scale = reduce_scale(reduce, p.points);
  const auto opmath = grad_g.scalar_type();
  const auto fx = p.fx.to(opmath), fy = p.fy.to(opmath);
  auto gx = at::empty({p.batch, p.c, p.points}, grad_g.options());
  auto gy = at::empty({p.batch, p.d, p.points}, grad_g.options());
  at::baddbmm_out(gx, gx, grad_g, fy, /*beta=*/0.0, scale);  // beta = 0: never read
  at::baddbmm_out(gy, gy, grad_g.transpose(1, 2), fx, 0.0, scale);
  return {gx.to(x.scalar_type()).view(x.sizes()), gy.to(y->scalar_type()).view(y->sizes())};
}

// out [B, N] in out_dtype and norm from z [B, N] (opmath, ours: written over when the dtypes match).
TensorPair finish(at::Tensor z, double alpha, const EpilogueOptions& opts, at::ScalarType out_dtype,
                  const Loops& loops) {
  z = z.contiguous();
  auto out = z.scalar_type() == out_dtype ? z : at::empty(z.sizes(), z.options().dtype(out_dtype));
  auto norm = at::empty({opts.l2_normalize ? z.size(0) : 0}, z.options());
  if (z.numel() > 0) {
    loops.epilogue(z, alpha, opts, out, norm);
  } else if (opts.l2_normalize) {
    norm.zero_();
  }
  return {out, norm};
}

// grad and out in x's dtype, norm in its accumulation dtype, as the forward and autograd give them.
void check_saved(const char* op, const at::Tensor& x, const at::Tensor& grad, const at::Tensor& out,
                 const at::Tensor& norm, int64_t batch, int64_t width, bool l2_normalize) {
  check_same_dtype(op, "grad", grad, "x", x);
  check_same_dtype(op, "out", out, "x", x);
  check_dtype(op, "norm", norm, acc_dtype(x));
  check_same_device(op, "out", out, "x", x);
  check_same_device(op, "norm", norm, "x", x);
  CVOPS_CHECK(grad.dim() == 2 && grad.size(0) == batch && grad.size(1) == width, op,
              "grad must have shape [", batch, ", ", width, "], got ", grad.sizes());
  CVOPS_CHECK(out.sizes() == grad.sizes(), op, "out must have shape [", batch, ", ", width,
              "], got ", out.sizes());
  check_same_device(op, "grad", grad, "out", out);
  CVOPS_CHECK(norm.dim() == 1 && norm.size(0) == (l2_normalize ? batch : 0), op,
              "norm must have shape [", (l2_normalize ? batch : 0),
              "] (the forward's second output), got ", norm.sizes());
}

// d loss / d(alpha·z) [B, N] opmath from the epilogue's grad, out and norm.
at::Tensor epilogue_backward(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& norm,
                             bool signed_sqrt, bool l2_normalize, const Loops& loops) {
  const auto opmath = acc_dtype(out);
  auto grad_z = at::empty(out.sizes(), out.options().dtype(opmath));
  if (grad_z.numel() > 0) {
    const auto g = grad.to(out.scalar_type()).contiguous();
    const auto o = out.contiguous();
    const auto n = norm.to(opmath).contiguous();
    loops.epilogue_backward(g, o, n, signed_sqrt, l2_normalize, grad_z);
  }
  return grad_z;
}

// The rows [B·N, C] of x (one per sample and position), in the GEMM dtype.
at::Tensor position_rows(const at::Tensor& features, const Loops& loops) {
  return gemm_operand(features, loops)
      .transpose(1, 2)
      .reshape({features.size(0) * features.size(2), features.size(1)})
      .contiguous();
}

int64_t chunk_rows(const Loops& loops, int64_t width) {
  return std::max(kMinChunkRows, loops.gemm_chunk_elements / std::max<int64_t>(width, 1));
}

// The sample of each row in [row0, row0 + rows), for gathering per-sample gradients.
at::Tensor row_samples(int64_t row0, int64_t rows, int64_t rows_per_sample,
                       const at::TensorOptions& options) {
  return at::arange(row0, row0 + rows, options.dtype(at::kLong)).div_(rows_per_sample, "floor");
}

void check_hash(const char* op, const char* hname, const at::Tensor& h, const char* sname,
                const at::Tensor& s, int64_t channels, int64_t output_dim, const at::Tensor& x) {
  check_dtype(op, hname, h, at::kLong);
  check_same_device(op, hname, h, "x", x);
  check_same_device(op, sname, s, "x", x);
  check_floating(op, sname, s);
  CVOPS_CHECK(h.dim() == 1 && h.size(0) == channels, op, hname, " must have shape [", channels,
              "] (one bin per channel), got ", h.sizes());
  CVOPS_CHECK(s.dim() == 1 && s.size(0) == channels, op, sname, " must have shape [", channels,
              "] (one sign per channel), got ", s.sizes());
  check_index_range(op, hname, h, output_dim);
}

struct SketchArgs {
  at::Tensor h1, s1, h2, s2;
};

SketchArgs sketch_args(const char* op, const Pair& p, const at::Tensor& x, const at::Tensor& h1,
                       const at::Tensor& s1, const at::Tensor& h2, const at::Tensor& s2,
                       int64_t output_dim) {
  CVOPS_CHECK(output_dim >= 1, op, "output_dim must be >= 1, got ", output_dim);
  check_output_fits(op, "output_dim = " + std::to_string(output_dim), {p.batch, output_dim},
                    x.options().dtype(acc_dtype(x)));
  check_hash(op, "h1", h1, "s1", s1, p.c, output_dim, x);
  check_hash(op, "h2", h2, "s2", s2, p.d, output_dim, x);
  const auto opmath = acc_dtype(x);
  return {h1.contiguous(), s1.to(opmath).contiguous(), h2.contiguous(), s2.to(opmath).contiguous()};
}

void check_projection(const char* op, const char* name, const at::Tensor& w, int64_t channels,
                      const at::Tensor& x) {
  check_floating(op, name, w);
  check_same_device(op, name, w, "x", x);
  CVOPS_CHECK(w.dim() == 2 && w.size(0) == channels && w.size(1) >= 1, op, name,
              " must have shape [", channels, ", output_dim] with output_dim >= 1, got ",
              w.sizes());
}

// w1 [C, d] and w2 [D, d]: Random Maclaurin's two projections, of one output_dim d.
void check_projections(const char* op, const at::Tensor& w1, const at::Tensor& w2, const Pair& p,
                       const at::Tensor& x) {
  check_projection(op, "w1", w1, p.c, x);
  check_projection(op, "w2", w2, p.d, x);
  CVOPS_CHECK(w2.size(1) == w1.size(1), op, "w2 must have w1's output_dim ", w1.size(1),
              ", got shape ", w2.sizes());
}

// z [B, d] acc = Σ_p (W1ᵀx_p)∘(W2ᵀy_p), chunk by chunk of positions.
at::Tensor maclaurin_sum(const Pair& p, const at::Tensor& w1, const at::Tensor& w2,
                         const Loops& loops) {
  const int64_t d = w1.size(1);
  auto acc = at::zeros({p.batch, d}, p.fx.options().dtype(acc_dtype(p.fx)));
  const int64_t rows = p.batch * p.points;
  if (rows == 0 || d == 0) return acc;
  const auto xr = position_rows(p.fx, loops);
  const auto yr = p.fy.defined() ? position_rows(p.fy, loops) : xr;
  const auto a = w1.to(xr.scalar_type()), b = w2.to(xr.scalar_type());
  const int64_t step = chunk_rows(loops, d);
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t len = std::min(step, rows - r0);
    const auto px = at::mm(xr.narrow(0, r0, len), a), py = at::mm(yr.narrow(0, r0, len), b);
    loops.segment_product_sum(px, py, r0, p.points, /*group=*/1, /*num_positive=*/1, acc);
  }
  return acc;
}

void check_factorized(const char* op, const at::Tensor& x, const at::Tensor& y, int64_t k) {
  check_dim(op, "x", x, 2, "[B, k·o]");
  check_floating(op, "x", x);
  check_same_device(op, "y", y, "x", x);
  CVOPS_CHECK(y.sizes() == x.sizes(), op, "y must have x's shape ", x.sizes(), ", got ", y.sizes());
  CVOPS_CHECK(y.scalar_type() == x.scalar_type(), op, "y must have x's dtype ", x.scalar_type(),
              ", got ", y.scalar_type());
  CVOPS_CHECK(k >= 1, op, "k must be >= 1, got ", k);
  CVOPS_CHECK(x.size(1) % k == 0, op, "k must divide the width of x (k·o), got k = ", k,
              " and width ", x.size(1));
}

struct LowRank {
  int64_t batch, channels, points, classes, rank;
  at::Tensor rows;   // [B·N, C] in the GEMM dtype
  at::Tensor uflat;  // [C, K·r] in the GEMM dtype
};

LowRank check_lowrank(const char* op, const at::Tensor& x, const at::Tensor& u,
                      int64_t num_positive, const Loops& loops) {
  check_features(op, "x", x);
  check_floating(op, "U", u);
  check_same_device(op, "U", u, "x", x);
  CVOPS_CHECK(u.dim() == 3 && u.size(1) == x.size(1), op,
              "U must have shape [K, C, r] with C = ", x.size(1), " channels of x, got ",
              u.sizes());
  CVOPS_CHECK(num_positive >= 0 && num_positive <= u.size(2), op,
              "num_positive must lie in [0, r] = [0, ", u.size(2), "], got ", num_positive);
  const int64_t B = x.size(0), C = x.size(1), N = count_points(x);
  const auto rows = position_rows(x.reshape({B, C, N}), loops);
  const auto uflat =
      u.permute({1, 0, 2}).reshape({C, u.size(0) * u.size(2)}).to(rows.scalar_type()).contiguous();
  return {B, C, N, u.size(0), u.size(2), rows, uflat};
}


TensorPair bilinear_pool(const at::Tensor& x, const OptTensor& y, std::string_view reduce_name,
                         bool signed_sqrt, bool l2_normalize, double eps) {
  constexpr const char* op = "bilinear_pool";
  const auto p = check_pair(op, x, y);
  const Loops& loops = bilinear_loops()(op, x);
  const auto reduce = parse_reduce(op, reduce_name);
  const auto opts = check_epilogue(op, x, signed_sqrt, l2_normalize, eps);
  auto [g, alpha] = pooled_outer(op, p, reduce, loops);
  return finish(g.view({p.batch, p.c * p.d}), alpha, opts, x.scalar_type(), loops);
}

TensorPair bilinear_pool_backward(const at::Tensor& grad, const at::Tensor& x, const OptTensor& y,
                                  const at::Tensor& out, const at::Tensor& norm,
                                  std::string_view reduce_name, bool signed_sqrt,
                                  bool l2_normalize) {
  constexpr const char* op = "bilinear_pool_backward";
  const auto p = check_pair(op, x, y);
  const Loops& loops = bilinear_loops()(op, x);
  const auto reduce = parse_reduce(op, reduce_name);
  check_saved(op, x, grad, out, norm, p.batch, p.c * p.d, l2_normalize);
  const auto grad_z = epilogue_backward(grad, out, norm, signed_sqrt, l2_normalize, loops);
  // The forward's alpha is folded into pooled_outer_backward's scale (y given) or the gram
  // family's normalisation (y = x).
  return pooled_outer_backward(grad_z.view({p.batch, p.c, p.d}), x, y, p, reduce);
}

TensorPair tensor_sketch_pool(const at::Tensor& x, const OptTensor& y, const at::Tensor& h1,
                              const at::Tensor& s1, const at::Tensor& h2, const at::Tensor& s2,
                              int64_t output_dim, std::string_view reduce_name, bool signed_sqrt,
                              bool l2_normalize, double eps) {
  constexpr const char* op = "compact_bilinear_pool";
  const auto p = check_pair(op, x, y);
  const Loops& loops = bilinear_loops()(op, x);
  const auto reduce = parse_reduce(op, reduce_name);
  const auto opts = check_epilogue(op, x, signed_sqrt, l2_normalize, eps);
  const auto args = sketch_args(op, p, x, h1, s1, h2, s2, output_dim);
  // The sketch is linear in the outer product: Σ_p TS(x_p ⊗ y_p) = TS(G) with G = Σ_p x_p y_pᵀ,
  // so one GEMM and one pass over G replace H·W FFTs of size d.
  if (!p.fy.defined() && loops.symmetric_tensor_sketch && p.points > 0 && p.batch * p.c > 0) {
    // y = x: sketch the upper-triangle GEMM panels as they come (each off-diagonal entry feeds
    // two bins), never assembling or mirroring G; the scale moves into the epilogue.
    const auto features = gemm_operand(p.fx, loops).contiguous();
    auto sketch = at::zeros({p.batch, output_dim}, features.options());
    loops.symmetric_tensor_sketch(features, args.h1, args.s1, args.h2, args.s2, sketch);
    return finish(sketch, reduce_scale(reduce, p.points), opts, x.scalar_type(), loops);
  }
  auto [g, alpha] = pooled_outer(op, p, reduce, loops);
  auto sketch = at::zeros({p.batch, output_dim}, g.options());
  if (g.numel() > 0) loops.tensor_sketch(g, args.h1, args.s1, args.h2, args.s2, sketch);
  return finish(sketch, alpha, opts, x.scalar_type(), loops);
}

TensorPair tensor_sketch_pool_backward(const at::Tensor& grad, const at::Tensor& x,
                                       const OptTensor& y, const at::Tensor& h1,
                                       const at::Tensor& s1, const at::Tensor& h2,
                                       const at::Tensor& s2, const at::Tensor& out,
                                       const at::Tensor& norm, std::string_view reduce_name,
                                       bool signed_sqrt, bool l2_normalize) {
  constexpr const char* op = "compact_bilinear_pool_backward";
  const auto p = check_pair(op, x, y);
  const Loops& loops = bilinear_loops()(op, x);
  const auto reduce = parse_reduce(op, reduce_name);
  // The forward never makes an empty sketch: out [B, 0] can only come from a direct call.
  CVOPS_CHECK(out.dim() == 2 && out.size(1) >= 1, op,
              "out must be the forward's output [B, output_dim] with output_dim >= 1, got shape ",
              out.sizes());
  const int64_t output_dim = out.size(1);
  check_saved(op, x, grad, out, norm, p.batch, output_dim, l2_normalize);
  const auto args = sketch_args(op, p, x, h1, s1, h2, s2, output_dim);
  const auto grad_z = epilogue_backward(grad, out, norm, signed_sqrt, l2_normalize, loops);
  auto grad_g = at::empty({p.batch, p.c, p.d}, grad_z.options());
  if (grad_g.numel() > 0) {
    loops.tensor_sketch_backward(grad_z, args.h1, args.s1, args.h2, args.s2, grad_g);
  }
  return pooled_outer_backward(grad_g, x, y, p, reduce);
}

TensorPair random_maclaurin_pool(const at::Tensor& x, const OptTensor& y, const at::Tensor& w1,
                                 const at::Tensor& w2, std::string_view reduce_name,
                                 bool signed_sqrt, bool l2_normalize, double eps) {
  constexpr const char* op = "compact_bilinear_pool";
  const auto p = check_pair(op, x, y);
  const Loops& loops = bilinear_loops()(op, x);
  const auto reduce = parse_reduce(op, reduce_name);
  const auto opts = check_epilogue(op, x, signed_sqrt, l2_normalize, eps);
  check_projections(op, w1, w2, p, x);
  const int64_t d = w1.size(1);
  const double alpha = reduce_scale(reduce, p.points) / std::sqrt(static_cast<double>(d));
  return finish(maclaurin_sum(p, w1, w2, loops), alpha, opts, x.scalar_type(), loops);
}

TensorPair random_maclaurin_pool_backward(const at::Tensor& grad, const at::Tensor& x,
                                          const OptTensor& y, const at::Tensor& w1,
                                          const at::Tensor& w2, const at::Tensor& out,
                                          const at::Tensor& norm, std::string_view reduce_name,
                                          bool signed_sqrt, bool l2_normalize) {
  constexpr const char* op = "compact_bilinear_pool_backward";
  const auto p = check_pair(op, x, y);
  const Loops& loops = bilinear_loops()(op, x);
  const auto reduce = parse_reduce(op, reduce_name);
  check_projections(op, w1, w2, p, x);
  const int64_t d = w1.size(1);
  check_saved(op, x, grad, out, norm, p.batch, d, l2_normalize);
  const double alpha = reduce_scale(reduce, p.points) / std::sqrt(static_cast<double>(d));
  // d loss / d acc, then per chunk of positions: dP = dacc[b(r)]∘Q, dx_r = dP·W1ᵀ (and the same
  // for y), recomputing the projections P = xW1, Q = yW2 rather than keeping B·N·d of them.
  const auto grad_acc =
      epilogue_backward(grad, out, norm, signed_sqrt, l2_normalize, loops).mul_(alpha);
  const int64_t rows = p.batch * p.points;
  const auto xr = position_rows(p.fx, loops);
  const auto yr = p.fy.defined() ? position_rows(p.fy, loops) : xr;
  const auto opmath = grad_acc.scalar_type();
  const auto xo = xr.to(opmath), yo = yr.to(opmath);
  const auto a = w1.to(opmath), b = w2.to(opmath);
  auto gxr = at::empty({rows, p.c}, grad_acc.options());
  auto gyr = p.fy.defined() ? at::empty({rows, p.d}, grad_acc.options()) : gxr;
  const int64_t step = chunk_rows(loops, d);
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t len = std::min(step, rows - r0);
    const auto g = at::index_select(grad_acc, 0, row_samples(r0, len, p.points, xr.options()));
    const auto px = at::mm(xo.narrow(0, r0, len), a), py = at::mm(yo.narrow(0, r0, len), b);
    auto gx = gxr.narrow(0, r0, len);
    at::mm_out(gx, py.mul_(g), a.t());
    if (p.fy.defined()) {
      auto gy = gyr.narrow(0, r0, len);
      at::mm_out(gy, px.mul_(g), b.t());
    } else {
      gx.addmm_(px.mul_(g), b.t());  // y = x: both factors' gradients land on x
    }
  }
  auto to_input = [&](const at::Tensor& rows_grad, const at::Tensor& like, int64_t channels) {
    return rows_grad.view({p.batch, p.points, channels})
        .transpose(1, 2)
        .to(like.scalar_type())
        .contiguous()
        .view(like.sizes());
  };
  return {to_input(gxr, x, p.c),
          p.fy.defined() ? to_input(gyr, *y, p.d) : at::empty({0}, x.options())};
}

TensorPair factorized_bilinear_pool(const at::Tensor& x, const at::Tensor& y, int64_t k,
                                    bool signed_sqrt, bool l2_normalize, double eps) {
  constexpr const char* op = "factorized_bilinear_pool";
  check_factorized(op, x, y, k);
  const Loops& loops = bilinear_loops()(op, x);
  const auto opts = check_epilogue(op, x, signed_sqrt, l2_normalize, eps);
  const int64_t B = x.size(0), o = x.size(1) / k;
  auto out = at::empty({B, o}, x.options());
  auto norm = at::empty({l2_normalize ? B : 0}, x.options().dtype(acc_dtype(x)));
  if (out.numel() > 0) {
    loops.factorized_pool(x.contiguous(), y.contiguous(), k, opts, out, norm);
  } else if (l2_normalize) {
    norm.zero_();
  }
  return {out, norm};
}

TensorPair factorized_bilinear_pool_backward(const at::Tensor& grad, const at::Tensor& x,
                                             const at::Tensor& y, const at::Tensor& out,
                                             const at::Tensor& norm, int64_t k, bool signed_sqrt,
                                             bool l2_normalize) {
  constexpr const char* op = "factorized_bilinear_pool_backward";
  check_factorized(op, x, y, k);
  const Loops& loops = bilinear_loops()(op, x);
  const int64_t B = x.size(0), o = x.size(1) / k;
  check_saved(op, x, grad, out, norm, B, o, l2_normalize);
  auto grad_x = at::empty(x.sizes(), x.options());
  auto grad_y = at::empty(y.sizes(), y.options());
  if (out.numel() > 0) {
    loops.factorized_pool_backward(
        grad.to(out.scalar_type()).contiguous(), x.contiguous(), y.contiguous(), out.contiguous(),
        norm.to(acc_dtype(x)).contiguous(), k, signed_sqrt, l2_normalize, grad_x, grad_y);
  } else {
    grad_x.zero_();
    grad_y.zero_();
  }
  return {grad_x, grad_y};
}

at::Tensor lowrank_bilinear_score(const at::Tensor& x, const at::Tensor& u, int64_t num_positive) {
  constexpr const char* op = "lowrank_bilinear_score";
  check_defined(op, "x", x);
  const Loops& loops = bilinear_loops()(op, x);
  const auto lr = check_lowrank(op, x, u, num_positive, loops);
  auto score = at::zeros({lr.batch, lr.classes}, x.options().dtype(acc_dtype(x)));
  const int64_t rows = lr.batch * lr.points, width = lr.classes * lr.rank;
  if (rows > 0 && width > 0) {
    // Z = X·U per chunk of positions, squared and summed per class by the device loop.
    const int64_t step = chunk_rows(loops, width);
    for (int64_t r0 = 0; r0 < rows; r0 += step) {
      const int64_t len = std::min(step, rows - r0);
      const auto z = at::mm(lr.rows.narrow(0, r0, len), lr.uflat);
      loops.segment_product_sum(z, z, r0, lr.points, lr.rank, num_positive, score);
    }
  }
  return score.to(x.scalar_type());
}

TensorPair lowrank_bilinear_score_backward(const at::Tensor& grad, const at::Tensor& x,
                                           const at::Tensor& u, int64_t num_positive) {
  constexpr const char* op = "lowrank_bilinear_score_backward";
  check_defined(op, "x", x);
  const Loops& loops = bilinear_loops()(op, x);
  const auto lr = check_lowrank(op, x, u, num_positive, loops);
  check_same_dtype(op, "grad", grad, "x", x);
  check_same_device(op, "grad", grad, "x", x);
  CVOPS_CHECK(grad.dim() == 2 && grad.size(0) == lr.batch && grad.size(1) == lr.classes, op,
              "grad must have shape [", lr.batch, ", ", lr.classes, "], got ", grad.sizes());
  const auto opmath = acc_dtype(x);
  const int64_t rows = lr.batch * lr.points, width = lr.classes * lr.rank;
  const auto xo = lr.rows.to(opmath), uo = lr.uflat.to(opmath);
  // dZ[r, (k, j)] = 2·σ_j·grad[b(r), k]·Z[r, (k, j)]; dX = dZ·Uᵀ, dU = Σ_chunks Xᵀ·dZ (fixed order).
  auto sigma = at::ones({lr.rank}, grad.options().dtype(opmath));
  sigma.narrow(0, num_positive, lr.rank - num_positive).fill_(-1.0);
  const auto weight = (grad.to(opmath).unsqueeze(-1) * sigma.mul_(2.0)).reshape({lr.batch, width});
  auto gxr = at::zeros({rows, lr.channels}, xo.options());
  auto gu = at::zeros({lr.channels, width}, xo.options());
  const int64_t step = chunk_rows(loops, std::max<int64_t>(width, 1));
  for (int64_t r0 = 0; r0 < rows && width > 0; r0 += step) {
    const int64_t len = std::min(step, rows - r0);
    const auto xc = xo.narrow(0, r0, len);
    auto dz = at::mm(xc, uo).mul_(
        at::index_select(weight, 0, row_samples(r0, len, lr.points, xo.options())));
    auto gx = gxr.narrow(0, r0, len);
    at::mm_out(gx, dz, uo.t());
    gu.addmm_(xc.t(), dz);
  }
  auto grad_x = gxr.view({lr.batch, lr.points, lr.channels})
                    .transpose(1, 2)
                    .to(x.scalar_type())
                    .contiguous()
                    .view(x.sizes());
  auto grad_u = gu.view({lr.channels, lr.classes, lr.rank})
                    .permute({1, 0, 2})
                    .to(u.scalar_type())
                    .contiguous();
  return {grad_x, grad_u};
}

}  // namespace

CVOPS_LOOP_TABLE(bilinear_loops, "bilinear")

CVOPS_FAMILY_OPS(bilinear_loops, ops) {
  ops.impl("_bilinear_pool", &bilinear_pool)
      .impl("_bilinear_pool_backward", &bilinear_pool_backward)
      .impl("_compact_bilinear_pool_ts", &tensor_sketch_pool)
      .impl("_compact_bilinear_pool_ts_backward", &tensor_sketch_pool_backward)
      .impl("_compact_bilinear_pool_rm", &random_maclaurin_pool)
      .impl("_compact_bilinear_pool_rm_backward", &random_maclaurin_pool_backward)
      .impl("_factorized_bilinear_pool", &factorized_bilinear_pool)
      .impl("_factorized_bilinear_pool_backward", &factorized_bilinear_pool_backward)
      .impl("lowrank_bilinear_score", &lowrank_bilinear_score)
      .impl("_lowrank_bilinear_score_backward", &lowrank_bilinear_score_backward);
}

}  // namespace cvops::bilinear
