// Schemas of the gram family and its op bodies, for every device: validation, the scale, the
// reduction of the loss; the Gram matrices come from the device loops (gram.h), the backward ops
// are ATen GEMMs (registered once, for every device).
#include "gram/gram.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <string>
#include <string_view>

#include "common/checks.h"
#include "common/choice.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/symmetric_gram.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  m.def("gram_matrix(Tensor x, str normalize, float divisor) -> Tensor");
  m.def("_gram_matrix_backward(Tensor grad, Tensor x, str normalize, float divisor) -> Tensor");
  // Returns (loss, residual): when keep_residual, the symmetric residual G − (S + Sᵀ)/2 per sample
  // [B, C, C] (what the backward multiplies F by, so G is not recomputed); else an empty tensor.
  m.def(
      "_style_loss(Tensor x, Tensor target, Tensor? target_index, str normalize, float divisor, "
      "str reduction, bool keep_residual) -> (Tensor, Tensor)");
  m.def(
      "_style_loss_backward(Tensor grad_loss, Tensor x, Tensor residual, str normalize, "
      "float divisor, str reduction) -> Tensor");
}

namespace cvops::gram {
namespace {

struct FeatureShape {
  int64_t batch;     // B
  int64_t channels;  // C
  int64_t points;    // N = product of the spatial dims
};

enum class Reduction { kMean, kSum, kNone };

// x must be a floating [B, C, *spatial] tensor with at least one spatial dim.
FeatureShape check_features(const char* op, const at::Tensor& x) {
  check_min_dim(op, "x", x, 3, "[B, C, *spatial]");
  check_floating(op, "x", x);
  int64_t points = 1;
  for (int64_t d = 2; d < x.dim(); ++d) points *= x.size(d);
  return {x.size(0), x.size(1), points};
}

double resolve_scale(const char* op, std::string_view normalize, double divisor,
                     const FeatureShape& shape) {
  if (normalize == "none") return 1.0;
  // An empty plane gives G = 0 whatever the scale; 1 keeps 0·s finite.
  if (normalize == "hw") return shape.points > 0 ? 1.0 / shape.points : 1.0;
  if (normalize == "chw") {
    const double n = static_cast<double>(shape.channels) * shape.points;
    return n > 0 ? 1.0 / n : 1.0;
  }
  if (normalize == "value") {
    CVOPS_CHECK(std::isfinite(divisor) && divisor > 0, op,
                "normalize must be a positive finite number, got ", divisor);
    return 1.0 / divisor;
  }
  CVOPS_CHECK(false, op, "normalize must be 'none', 'hw', 'chw' or a positive number, got '",
              std::string(normalize), "'");
}

Reduction parse_reduction(const char* op, std::string_view reduction) {
  return parse_choice<Reduction>(
      op, "reduction", reduction,
      {{"mean", Reduction::kMean}, {"sum", Reduction::kSum}, {"none", Reduction::kNone}});
}

void check_style_target(const char* op, const at::Tensor& x, const FeatureShape& shape,
                        const at::Tensor& target, const std::optional<at::Tensor>& target_index) {
  check_floating(op, "target", target);
  check_same_device(op, "target", target, "x", x);
  const int64_t C = shape.channels;
  const bool square = target.dim() >= 2 && target.size(-1) == C && target.size(-2) == C;
  if (target_index.has_value()) {
    const at::Tensor& index = *target_index;
    CVOPS_CHECK(target.dim() == 3 && square, op, "with target_index, target must be a bank [S, ", C,
                ", ", C, "], got shape ", target.sizes());
    check_dtype(op, "target_index", index, at::kLong);
    check_same_device(op, "target_index", index, "x", x);
    CVOPS_CHECK(index.dim() == 1 && index.size(0) == shape.batch, op,
                "target_index must have shape [B] = [", shape.batch, "], got ", index.sizes());
    check_index_range(op, "target_index", index, target.size(0));
  } else {
    const bool per_sample = target.dim() == 3 && target.size(0) == shape.batch;
    CVOPS_CHECK(square && (target.dim() == 2 || per_sample), op, "target must be [", C, ", ", C,
                "] or [B, ", C, ", ", C, "] with B = ", shape.batch,
                " (or a bank [S, C, C] with target_index), got shape ", target.sizes());
  }
}

at::Tensor reduce_loss(const at::Tensor& per_sample, Reduction reduction, const FeatureShape& shape,
                       at::ScalarType out_dtype) {
  switch (reduction) {
    case Reduction::kNone: return per_sample.to(out_dtype);
    case Reduction::kSum: return per_sample.sum().to(out_dtype);
    case Reduction::kMean: break;
  }
  const double count = static_cast<double>(shape.batch) * shape.channels * shape.channels;
  return per_sample.sum().div(count).to(out_dtype);  // B = 0 gives NaN, as torch's mean does
}

at::Tensor empty_residual(const at::Tensor& x) {
  return at::empty({0}, x.options().dtype(opmath_dtype(x.scalar_type())));
}

// dF = alpha·W·F with W [B, C, C] in opmath dtype, returned in x's dtype and shape.
at::Tensor weight_times_features(const at::Tensor& weight, const at::Tensor& x,
                                 const FeatureShape& shape, double alpha = 1.0) {
  return weight_times(weight, x.reshape({shape.batch, shape.channels, shape.points}), alpha)
      .view(x.sizes());
}

at::Tensor gram_matrix(const at::Tensor& x, std::string_view normalize, double divisor) {
  constexpr const char* op = "gram_matrix";
  const auto shape = check_features(op, x);
  const double scale = resolve_scale(op, normalize, divisor, shape);
  const int64_t B = shape.batch, C = shape.channels;
  if (shape.points == 0 || B * C == 0) return at::zeros({B, C, C}, x.options());
  return gram_loops()(op, x).gram_matrix(op, x.reshape({B, C, shape.points}), scale);
}

std::tuple<at::Tensor, at::Tensor> style_loss(const at::Tensor& x, const at::Tensor& target,
                                              const std::optional<at::Tensor>& target_index,
                                              std::string_view normalize, double divisor,
                                              std::string_view reduction, bool keep_residual) {
  constexpr const char* op = "style_loss";
  const auto shape = check_features(op, x);
  const double scale = resolve_scale(op, normalize, divisor, shape);
  const auto mode = parse_reduction(op, reduction);
  check_style_target(op, x, shape, target, target_index);
  const int64_t B = shape.batch, C = shape.channels;
  const auto opmath = opmath_dtype(x.scalar_type());
  at::Tensor per_sample, residual;
  if (B * C == 0) {
    per_sample = at::zeros({B}, x.options().dtype(opmath));
    residual = at::empty({B, C, C}, per_sample.options());
  } else {
    const auto index = target_index.has_value() ? target_index->contiguous() : at::Tensor();
    std::tie(per_sample, residual) = gram_loops()(op, x).style_loss(
        op, x.reshape({B, C, shape.points}), target.to(opmath).contiguous(), index,
        target.dim() == 3 ? C * C : 0, scale, keep_residual);
  }
  return {reduce_loss(per_sample, mode, shape, x.scalar_type()),
          keep_residual ? residual : empty_residual(x)};
}

at::Tensor gram_matrix_backward(const at::Tensor& grad, const at::Tensor& x,
                                std::string_view normalize, double divisor) {
  constexpr const char* op = "gram_matrix_backward";
  const auto shape = check_features(op, x);
  const double scale = resolve_scale(op, normalize, divisor, shape);
  check_same_dtype(op, "grad", grad, "x", x);
  check_same_device(op, "grad", grad, "x", x);
  CVOPS_CHECK(grad.dim() == 3 && grad.size(0) == shape.batch && grad.size(1) == shape.channels &&
                  grad.size(2) == shape.channels,
              op, "grad must have shape [", shape.batch, ", ", shape.channels, ", ", shape.channels,
              "], got ", grad.sizes());
  return symmetric_gram_backward(grad, x.reshape({shape.batch, shape.channels, shape.points}),
                                 scale)
      .view(x.sizes());
}

at::Tensor style_loss_backward(const at::Tensor& grad_loss, const at::Tensor& x,
                               const at::Tensor& residual, std::string_view normalize,
                               double divisor, std::string_view reduction) {
  constexpr const char* op = "style_loss_backward";
  const auto shape = check_features(op, x);
  const double scale = resolve_scale(op, normalize, divisor, shape);
  const auto mode = parse_reduction(op, reduction);
  const auto opmath = opmath_dtype(x.scalar_type());
  check_same_dtype(op, "grad_loss", grad_loss, "x", x);
  check_same_device(op, "grad_loss", grad_loss, "x", x);
  check_dtype(op, "residual", residual, opmath);
  check_same_device(op, "residual", residual, "x", x);
  CVOPS_CHECK(residual.numel() > 0 || shape.batch * shape.channels == 0, op,
              "residual is empty: the forward ran with keep_residual=False, which keeps nothing "
              "to differentiate");
  CVOPS_CHECK(residual.dim() == 3 && residual.size(0) == shape.batch &&
                  residual.size(1) == shape.channels && residual.size(2) == shape.channels,
              op, "residual must have shape [B, C, C], got ", residual.sizes());
  CVOPS_CHECK(mode == Reduction::kNone ? (grad_loss.dim() == 1 && grad_loss.size(0) == shape.batch)
                                       : grad_loss.numel() == 1,
              op, "grad_loss must have the loss's shape (",
              (mode == Reduction::kNone ? "[B]" : "[]"), " for reduction '", std::string(reduction),
              "'), got ", grad_loss.sizes());
  // L = Σ_b w_b Σ_ij (s·F·Fᵀ − S)²_ij  ⇒  dF_b = 2·s·w_b·(R + Rᵀ)·F_b = 4·s·w_b·R̂_b·F_b with the
  // symmetric residual R̂ = s·F·Fᵀ − (S + Sᵀ)/2 that the forward saved: one GEMM, no transpose.
  double alpha = 4.0 * scale;
  if (mode == Reduction::kMean) {
    alpha /= static_cast<double>(shape.batch) * shape.channels * shape.channels;
  }
  const auto r = residual.to(opmath);
  if (mode != Reduction::kNone && !grad_loss.is_cuda()) {
    // One weight for all samples, and reading it costs no device sync: fold it into the GEMM.
    return weight_times_features(r, x, shape, alpha * grad_loss.item<double>());
  }
  const auto weight = grad_loss.to(opmath).expand({shape.batch}).mul(alpha);
  return weight_times_features(r.mul(weight.view({shape.batch, 1, 1})), x, shape);
}

}  // namespace

CVOPS_LOOP_TABLE(gram_loops, "gram")

CVOPS_FAMILY_OPS(gram_loops, ops) {
  ops.impl("gram_matrix", &gram_matrix).impl("_style_loss", &style_loss);
}

TORCH_LIBRARY_IMPL(cvops, CompositeExplicitAutograd, m) {
  m.impl("_gram_matrix_backward", &gram_matrix_backward);
  m.impl("_style_loss_backward", &style_loss_backward);
}

}  // namespace cvops::gram
