// Schemas of the instance_norm family and its op bodies, for every device: validation, the per-sample
// affine (γ_b, β_b) from the style bank, and the reduction of the kernels' dγ/dβ back to the bank.
#include "instance_norm/instance_norm.h"

#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <string>

#include "common/checks.h"
#include "common/choice.h"
#include "common/cpu_memory.h"
#include "common/dispatch.h"
#include "common/loop_table.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  // Returns (out, mean, rstd); mean and rstd [B, C] (opmath dtype) are kept for the backward.
  m.def(
      "_conditional_instance_norm(Tensor x, Tensor weight, Tensor bias, Tensor style, float eps, "
      "str activation) -> (Tensor, Tensor, Tensor)");
  // Returns (grad_x, grad_weight, grad_bias, grad_style); grad_style is empty for index styles.
  m.def(
      "_conditional_instance_norm_backward(Tensor grad_out, Tensor x, Tensor out, Tensor weight, "
      "Tensor bias, Tensor style, Tensor mean, Tensor rstd, str activation) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

namespace cvops::instance_norm {
namespace {

constexpr const char* kOp = "conditional_instance_norm";

bool parse_activation(const char* op, std::string_view activation) {
  return parse_choice<bool>(op, "activation", activation, {{"none", false}, {"relu", true}});
}

bool is_index_style(const at::Tensor& style) { return style.scalar_type() == at::kLong; }

void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias, const at::Tensor& style, double eps) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_floating(op, "x", x);
  check_dim(op, "weight", weight, 2, "[S, C]");
  check_floating(op, "weight", weight);
  check_floating(op, "bias", bias);
  check_same_device(op, "weight", weight, "x", x);
  check_same_device(op, "bias", bias, "x", x);
  check_same_device(op, "style", style, "x", x);
  const int64_t B = x.size(0), C = x.size(1), S = weight.size(0);
  CVOPS_CHECK(weight.size(1) == C, op, "weight must be [S, C] with C = ", C,
              " channels of x, got shape ", weight.sizes());
  CVOPS_CHECK(bias.sizes() == weight.sizes(), op, "bias must have weight's shape ", weight.sizes(),
              ", got ", bias.sizes());
  if (is_index_style(style)) {
    CVOPS_CHECK(style.dim() == 1 && style.size(0) == B, op, "style indices must have shape [B] = [",
                B, "], got ", style.sizes());
    check_index_range(op, "style", style, S);
  } else {
    CVOPS_CHECK(at::isFloatingType(style.scalar_type()), op,
                "style must be int64 indices [B] or floating mixing weights [B, S], got dtype ",
                style.scalar_type());
    CVOPS_CHECK(style.dim() == 2 && style.size(0) == B && style.size(1) == S, op,
                "style mixing weights must have shape [B, S] = [", B, ", ", S, "], got ",
                style.sizes());
  }
  check_eps(op, eps, opmath_dtype(x.scalar_type()));
}

// γ_b = weight[style_b] (index) or Σ_s style_bs·weight_s (mixing weights), [B, C] in opmath.
at::Tensor per_sample(const at::Tensor& table, const at::Tensor& style, at::ScalarType opmath) {
  const auto t = table.to(opmath);
  return (is_index_style(style) ? at::index_select(t, 0, style) : at::mm(style.to(opmath), t))
      .contiguous();
}

// Kernels see NCHW- or channels_last-contiguous data; anything else is made NCHW-contiguous.
bool use_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

at::MemoryFormat format_of(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> conditional_instance_norm(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& style,
    double eps, std::string_view activation) {
  check_inputs(kOp, x, weight, bias, style, eps);
  const bool relu = parse_activation(kOp, activation);
  const int64_t B = x.size(0), C = x.size(1);
  const auto opmath = opmath_dtype(x.scalar_type());
  const bool channels_last = use_channels_last(x);
  const auto input = x.contiguous(format_of(channels_last));
  auto out = empty_streaming_output(x.sizes(), x.options(), format_of(channels_last));
  auto mean = at::empty({B, C}, x.options().dtype(opmath));
  auto rstd = at::empty({B, C}, x.options().dtype(opmath));
  if (B * C == 0) return {out, mean, rstd};
  if (x.size(2) * x.size(3) == 0) {  // empty planes: nothing to normalise
    mean.zero_();
    rstd.fill_(1.0 / std::sqrt(eps));
    return {out, mean, rstd};
  }
  const auto gamma = per_sample(weight, style, opmath);
  const auto beta = per_sample(bias, style, opmath);
  instance_norm_loops()(kOp, x).forward(input, gamma, beta, eps, relu, channels_last, out, mean,
                                        rstd);
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conditional_instance_norm_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out,
    const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& style,
    const at::Tensor& mean, const at::Tensor& rstd, std::string_view activation) {
  constexpr const char* op = "conditional_instance_norm_backward";
  check_inputs(op, x, weight, bias, style, 0.0);
  const bool relu = parse_activation(op, activation);
  const int64_t B = x.size(0), C = x.size(1), S = weight.size(0);
  const auto opmath = opmath_dtype(x.scalar_type());
  check_same_dtype(op, "grad_out", grad_out, "x", x);
  check_same_dtype(op, "out", out, "x", x);
  check_dtype(op, "mean", mean, opmath);
  check_dtype(op, "rstd", rstd, opmath);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"grad_out", grad_out},
                                {"out", out},
                                {"mean", mean},
                                {"rstd", rstd}})
    check_same_device(op, name, t, "x", x);
  CVOPS_CHECK(grad_out.sizes() == x.sizes() && out.sizes() == x.sizes(), op,
              "grad_out and out must have x's shape ", x.sizes(), ", got ", grad_out.sizes(),
              " and ", out.sizes());
  CVOPS_CHECK(
      mean.dim() == 2 && mean.size(0) == B && mean.size(1) == C && rstd.sizes() == mean.sizes(), op,
      "mean and rstd must be [B, C] = [", B, ", ", C, "], got ", mean.sizes(), " and ",
      rstd.sizes());
  const bool channels_last = use_channels_last(x);
  const auto format = format_of(channels_last);
  auto grad_x = empty_streaming_output(x.sizes(), x.options(), format);
  auto grad_gamma = at::zeros({B, C}, x.options().dtype(opmath));
  auto grad_beta = at::zeros({B, C}, x.options().dtype(opmath));
  if (grad_x.numel() > 0) {
    const auto gamma = per_sample(weight, style, opmath);
    instance_norm_loops()(op, x).backward(grad_out.contiguous(format), x.contiguous(format),
                                          out.contiguous(format), mean.to(opmath).contiguous(),
                                          rstd.to(opmath).contiguous(), gamma, relu, channels_last,
                                          grad_x, grad_gamma, grad_beta);
  }
  // Back to the bank, deterministically (a GEMM rather than float atomics):
  // index styles: dW = onehot(style)ᵀ·dγ; mixing weights: dW = styleᵀ·dγ, dstyle = dγ·Wᵀ + dβ·bᵀ.
  at::Tensor selection, grad_style;
  if (is_index_style(style)) {
    selection = at::zeros({B, S}, grad_gamma.options()).scatter_(1, style.view({B, 1}), 1.0);
    grad_style = at::empty({0}, grad_gamma.options());
  } else {
    selection = style.to(opmath);
    grad_style =
        at::addmm(at::mm(grad_gamma, weight.to(opmath).t()), grad_beta, bias.to(opmath).t())
            .to(style.scalar_type());
  }
  auto grad_weight = at::mm(selection.t(), grad_gamma).to(weight.scalar_type());
  auto grad_bias = at::mm(selection.t(), grad_beta).to(bias.scalar_type());
  return {grad_x, grad_weight, grad_bias, grad_style};
}

CVOPS_LOOP_TABLE(instance_norm_loops, "instance_norm")

CVOPS_FAMILY_OPS(instance_norm_loops, ops) {
  ops.impl("_conditional_instance_norm", &conditional_instance_norm)
      .impl("_conditional_instance_norm_backward", &conditional_instance_norm_backward);
}

}  // namespace cvops::instance_norm
