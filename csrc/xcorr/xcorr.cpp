// Schemas of the xcorr family and its op bodies: validation (the window checks of common/window.h),
// padding, dtypes and the scale/bias epilogue, for every device; the devices supply the loops.
#include "xcorr/xcorr.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <vector>

#include "common/checks.h"
#include "common/choice.h"
#include "common/cpu_memory.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/window.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  m.def(
      "_xcorr(Tensor x, Tensor z, Tensor? scale, Tensor? bias, str mode, int padding) "
      "-> (Tensor, Tensor)");
  m.def(
      "_xcorr_backward(Tensor grad, Tensor x, Tensor z, Tensor? scale, Tensor? bias, Tensor corr, "
      "str mode, int padding) -> (Tensor, Tensor, Tensor, Tensor)");
}

namespace cvops::xcorr {
namespace {

using OptTensor = std::optional<at::Tensor>;

XcorrMode parse_mode(const char* op, std::string_view mode) {
  return parse_choice<XcorrMode>(
      op, "mode", mode, {{"full", XcorrMode::kFull}, {"depthwise", XcorrMode::kDepthwise}});
}

struct Problem {
  int64_t batch, channels, out_channels, out_h, out_w;
};

// x [B, C, H, W] and z [Bz, C, h, w] (Bz = 1 or B), floating, one dtype and device; the template
// no larger than the padded search region.
Problem check_inputs(const char* op, const at::Tensor& x, const at::Tensor& z, XcorrMode mode,
                     int64_t padding) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_floating(op, "x", x);
  check_dim(op, "z", z, 4, "[Bz, C, h, w]");
  check_same_dtype(op, "z", z, "x", x);
  check_same_device(op, "z", z, "x", x);
  const int64_t B = x.size(0), C = x.size(1);
  CVOPS_CHECK(z.size(1) == C, op, "z must have x's ", C, " channels, got shape ", z.sizes());
  CVOPS_CHECK(z.size(0) == B || z.size(0) == 1, op, "z must hold one template per search image (",
              B, ") or one for all of them, got shape ", z.sizes());
  CVOPS_CHECK(padding >= 0, op, "padding must be >= 0, got ", padding);
  const Window1d h{z.size(2), 1, padding, 1}, w{z.size(3), 1, padding, 1};
  const auto size = check_window(op, x.size(2), x.size(3), Window2d{h, w});
  return {B, C, mode == XcorrMode::kFull ? 1 : C, size.h, size.w};
}

// scale and bias: one value, or (depthwise) one per channel; floating, on x's device.
void check_affine(const char* op, const char* name, const OptTensor& t, const Problem& p,
                  const at::Tensor& x) {
  if (!t.has_value()) return;
  check_floating(op, name, *t);
  check_same_device(op, name, *t, "x", x);
  const int64_t n = t->numel();
  CVOPS_CHECK(t->dim() <= 1 && (n == 1 || (p.out_channels > 1 && n == p.out_channels)), op, name,
              " must be one value ([] or [1])",
              p.out_channels > 1 ? " or one per channel [" + std::to_string(p.out_channels) + "]"
                                 : std::string(),
              ", got shape ", t->sizes());
}

// [1, Cout, 1, 1] in opmath, broadcasting over the output.
at::Tensor per_channel(const at::Tensor& t, const Problem& p, at::ScalarType opmath) {
  return t.to(opmath).reshape({1, -1, 1, 1}).expand({1, p.out_channels, 1, 1});
}

at::Tensor padded(const at::Tensor& x, int64_t padding, at::ScalarType opmath) {
  const auto xo = x.to(opmath);
  return (padding > 0 ? at::constant_pad_nd(xo, {padding, padding, padding, padding}, 0) : xo)
      .contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> xcorr_forward(const at::Tensor& x, const at::Tensor& z,
                                                 const OptTensor& scale, const OptTensor& bias,
                                                 std::string_view mode_name, int64_t padding) {
  constexpr const char* op = "xcorr";
  const XcorrMode mode = parse_mode(op, mode_name);
  const Problem p = check_inputs(op, x, z, mode, padding);
  check_affine(op, "scale", scale, p, x);
  check_affine(op, "bias", bias, p, x);
  const auto opmath = opmath_dtype(x.scalar_type());
  auto corr = empty_streaming_output({p.batch, p.out_channels, p.out_h, p.out_w},
                                     x.options().dtype(opmath));
  if (corr.numel() > 0) {
    xcorr_loops()(op, x).forward(padded(x, padding, opmath), z.to(opmath).contiguous(), mode, corr);
  }
  at::Tensor out = corr;
  if (scale.has_value()) out = out * per_channel(*scale, p, opmath);
  if (bias.has_value()) out = out + per_channel(*bias, p, opmath);
  // The backward of the scale needs the correlation itself; without a scale nothing is kept.
  return {out.to(x.scalar_type()), scale.has_value() ? corr : at::empty({0}, corr.options())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> xcorr_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& z, const OptTensor& scale,
    const OptTensor& bias, const at::Tensor& corr, std::string_view mode_name, int64_t padding) {
  constexpr const char* op = "xcorr_backward";
  const XcorrMode mode = parse_mode(op, mode_name);
  const Problem p = check_inputs(op, x, z, mode, padding);
  check_affine(op, "scale", scale, p, x);
  check_affine(op, "bias", bias, p, x);
  const std::vector<int64_t> out_shape{p.batch, p.out_channels, p.out_h, p.out_w};
  check_same_dtype(op, "grad", grad, "x", x);
  check_same_device(op, "grad", grad, "x", x);
  CVOPS_CHECK(grad.sizes() == at::IntArrayRef(out_shape), op, "grad must have the output's shape ",
              at::IntArrayRef(out_shape), ", got ", grad.sizes());
  const auto opmath = opmath_dtype(x.scalar_type());
  if (scale.has_value()) {
    check_dtype(op, "corr", corr, opmath);
    check_same_device(op, "corr", corr, "x", x);
    CVOPS_CHECK(corr.sizes() == at::IntArrayRef(out_shape), op,
                "corr must be the forward's second output ", at::IntArrayRef(out_shape),
                ", got shape ", corr.sizes());
  }
  const auto g = grad.to(opmath);
  const std::vector<int64_t> reduced{0, 2, 3};
  // Absent scale or bias: an empty gradient (autograd passes None for them).
  auto grad_scale = at::empty({0}, g.options()), grad_bias = at::empty({0}, g.options());
  if (bias.has_value()) grad_bias = g.sum(reduced).sum_to_size(bias->sizes()).to(bias->dtype());
  if (scale.has_value())
    grad_scale = (g * corr).sum(reduced).sum_to_size(scale->sizes()).to(scale->dtype());
  const auto grad_corr = (scale.has_value() ? g * per_channel(*scale, p, opmath) : g).contiguous();
  const auto xp = padded(x, padding, opmath);
  auto grad_xp = at::empty(xp.sizes(), xp.options());  // every element written by the loops
  auto grad_z = at::zeros(z.sizes(), xp.options());
  if (grad_corr.numel() > 0) {
    xcorr_loops()(op, x).backward(grad_corr, xp, z.to(opmath).contiguous(), mode, grad_xp, grad_z);
  }
  const int64_t H = x.size(2), W = x.size(3);
  const auto grad_x = grad_xp.narrow(2, padding, H).narrow(3, padding, W).to(x.scalar_type());
  return {grad_x.contiguous(), grad_z.to(z.scalar_type()), grad_scale, grad_bias};
}

CVOPS_LOOP_TABLE(xcorr_loops, "xcorr")

CVOPS_FAMILY_OPS(xcorr_loops, ops) {
  ops.impl("_xcorr", &xcorr_forward).impl("_xcorr_backward", &xcorr_backward);
}

}  // namespace cvops::xcorr
