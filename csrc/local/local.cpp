// Schemas of the local family and its op bodies: validation (common/window.h), dtypes and the
// [L, O, B] layout of the per-location GEMMs, for every device; the devices run them (local.h).
#include "local/local.h"

#include <ATen/Context.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/window.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  m.def(
      "_locally_connected2d(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation) -> Tensor");
  m.def(
      "_locally_connected2d_backward(Tensor grad, Tensor x, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation) -> (Tensor, Tensor)");
}

namespace cvops::local {
namespace {

constexpr const char* kOp = "locally_connected2d";

// x [B, C, H, W] and weight [oH, oW, O, C, kh, kw], floating, one dtype and device, the weight's
// locations matching the output size the window gives.
Problem check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_floating(op, "x", x);
  check_dim(op, "weight", weight, 6, "[oH, oW, O, C, kh, kw]");
  check_same_dtype(op, "weight", weight, "x", x);
  check_same_device(op, "weight", weight, "x", x);
  const Window2d window = window_of(op, weight.size(4), weight.size(5), stride, padding, dilation);
  const auto out = check_window(op, x.size(2), x.size(3), window);
  const int64_t C = x.size(1), O = weight.size(2);
  CVOPS_CHECK(weight.size(3) == C, op, "weight must have x's ", C,
              " channels in dim 3 ([oH, oW, O, C, kh, kw]), got shape ", weight.sizes());
  CVOPS_CHECK(weight.size(0) == out.h && weight.size(1) == out.w, op,
              "weight must hold one filter per output location [oH, oW] = [", out.h, ", ", out.w,
              "] (the output size of x with this kernel, stride, padding and dilation), got shape ",
              weight.sizes());
  return {window,    x.size(0), C,
          x.size(2), x.size(3), O,
          out.h,     out.w,     C * weight.size(4) * weight.size(5)};
}

// The weights as [L, O, taps] in the compute dtype.
at::Tensor location_weights(const at::Tensor& weight, const Problem& p, at::ScalarType dtype) {
  return weight.to(dtype).reshape({p.locations(), p.O, p.taps}).contiguous();
}

}  // namespace

at::Tensor locally_connected2d(const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Problem p = check_inputs(kOp, x, weight, stride, padding, dilation);
  if (bias.has_value()) {
    check_same_dtype(kOp, "bias", *bias, "x", x);
    check_same_device(kOp, "bias", *bias, "x", x);
    CVOPS_CHECK(bias->dim() == 3 && bias->size(0) == p.O && bias->size(1) == p.out_h &&
                    bias->size(2) == p.out_w,
                kOp, "bias must be [O, oH, oW] = [", p.O, ", ", p.out_h, ", ", p.out_w,
                "], got shape ", bias->sizes());
  }
  const auto dtype = opmath_dtype(x.scalar_type());
  const int64_t L = p.locations();
  // [L, O, B]: each location's GEMM writes one contiguous block; one transpose makes it NCHW.
  auto out = at::empty({L, p.O, p.B}, x.options().dtype(dtype));
  if (out.numel() > 0) {
    // Half inputs are exact in TF32, so their products may run on tensor cores; float32 inputs
    // only where torch's matmuls may (torch.backends.cuda.matmul.allow_tf32).
    const bool tf32 =
        x.scalar_type() != dtype || (dtype == at::kFloat && at::globalContext().allowTF32CuBLAS());
    local_loops()(kOp, x).forward(x.to(dtype).contiguous(), location_weights(weight, p, dtype), p,
                                  tf32, out);
  }
  // One pass: the transpose to NCHW, the bias and the cast back to x's dtype.
  auto result = at::empty({p.B, p.O, p.out_h, p.out_w}, x.options());
  const auto nchw = out.permute({2, 1, 0}).view({p.B, p.O, p.out_h, p.out_w});
  if (bias.has_value()) {
    at::add_out(result, nchw, bias->to(dtype).unsqueeze(0));
  } else {
    result.copy_(nchw);
  }
  return result;
}

std::tuple<at::Tensor, at::Tensor> locally_connected2d_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation) {
  constexpr const char* op = "locally_connected2d_backward";
  const Problem p = check_inputs(op, x, weight, stride, padding, dilation);
  check_same_dtype(op, "grad", grad, "x", x);
  check_same_device(op, "grad", grad, "x", x);
  const std::vector<int64_t> out_shape{p.B, p.O, p.out_h, p.out_w};
  CVOPS_CHECK(grad.sizes() == at::IntArrayRef(out_shape), op, "grad must have the output's shape ",
              at::IntArrayRef(out_shape), ", got ", grad.sizes());
  const auto dtype = opmath_dtype(x.scalar_type());
  const int64_t L = p.locations();
  auto grad_x = at::zeros(x.sizes(), x.options().dtype(dtype));
  // Every location's dW is written by the loops. With nothing to sum (an empty batch, or an empty
  // x, all of whose taps are padding) it is zero, and the loops do not run (a CUDA grid of 0).
  const bool sums = p.B > 0 && grad_x.numel() > 0 && L * p.O * p.taps > 0;
  auto grad_w = sums ? at::empty({L, p.O, p.taps}, x.options().dtype(dtype))
                     : at::zeros({L, p.O, p.taps}, x.options().dtype(dtype));
  if (sums) {
    auto g = at::empty({L, p.O, p.B}, grad.options().dtype(dtype));  // [L, O, B], in one pass
    g.copy_(grad.reshape({p.B, p.O, L}).permute({2, 1, 0}));
    local_loops()(op, x).backward(g, x.to(dtype).contiguous(), location_weights(weight, p, dtype),
                                  p, grad_x, grad_w);
  }
  return {grad_x.to(x.scalar_type()), grad_w.view(weight.sizes()).to(weight.scalar_type())};
}

CVOPS_LOOP_TABLE(local_loops, "local")

CVOPS_FAMILY_OPS(local_loops, ops) {
  ops.impl("_locally_connected2d", &locally_connected2d)
      .impl("_locally_connected2d_backward", &locally_connected2d_backward);
}

}  // namespace cvops::local
