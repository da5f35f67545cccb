// Schemas of the binary family and its op bodies: validation, tail masking and padding of the
// packed input, for every device; the devices supply the loops (binary.h).
#include "binary/binary.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/bitwise_and.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <vector>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/window.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  m.def("_pack_bits(Tensor x, float? clip=None, Tensor? bounds=None) -> Tensor");
  m.def(
      "_unpack_bits(Tensor bits, int channels, ScalarType dtype, float low, int[2] padding, "
      "float pad_value) -> Tensor");
  m.def(
      "_xnor_conv2d(Tensor x_bits, Tensor weight_bits, Tensor scale, Tensor? k_map, Tensor? bias, "
      "int channels, int[2] stride, int[2] padding, int[2] dilation, int pad_value) -> Tensor");
}

namespace cvops::binary {
namespace {

using OptTensor = std::optional<at::Tensor>;

int64_t words_of(int64_t channels) { return (channels + 63) / 64; }

// [Cw] int64: the words' valid channel bits (all ones but the last word's tail), made on the
// device by fills (no host copy: the op stays capturable in a CUDA graph).
at::Tensor channel_masks(int64_t channels, const at::Device& device) {
  const int64_t words = words_of(channels);
  auto masks = at::full({words}, -1, at::TensorOptions().dtype(at::kLong).device(device));
  if (channels % 64 != 0) {
    masks.narrow(0, words - 1, 1)
        .fill_(static_cast<int64_t>(channel_word_mask(words - 1, channels)));
  }
  return masks;
}

void check_bits(const char* op, const char* name, const at::Tensor& bits, const char* layout,
                int64_t channels) {
  check_dim(op, name, bits, 4, layout);
  CVOPS_CHECK(bits.scalar_type() == at::kLong, op, name,
              " must be int64 words (cvops.pack_bits), got ", bits.scalar_type());
  CVOPS_CHECK(bits.size(3) == words_of(channels), op, name, " must hold ", words_of(channels),
              " words per pixel for ", channels, " channels (ceil(C / 64)), got shape ",
              bits.sizes());
}

void check_epilogue(const char* op, const char* name, const OptTensor& t, const at::Tensor& scale,
                    at::IntArrayRef shape) {
  if (!t.has_value()) return;
  check_same_dtype(op, name, *t, "scale", scale);
  check_same_device(op, name, *t, "scale", scale);
  CVOPS_CHECK(t->sizes() == shape, op, name, " must have shape ", shape, ", got ", t->sizes());
}

}  // namespace

at::Tensor pack_bits(const at::Tensor& x, std::optional<double> clip, const OptTensor& bounds) {
  constexpr const char* op = "pack_bits";
  check_min_dim(op, "x", x, 2, "[N, C, *spatial]");
  check_floating(op, "x", x);
  const int64_t N = x.size(0), C = x.size(1);
  CVOPS_CHECK(C >= 1, op, "x must have at least one channel (dimension 1), got shape ", x.sizes());
  if (clip.has_value()) {
    CVOPS_CHECK(std::isfinite(*clip) && *clip >= 0, op, "clip must be a finite number >= 0, got ",
                *clip);
  }
  const auto compute = opmath_dtype(x.scalar_type());
  if (bounds.has_value()) {
    CVOPS_CHECK(!clip.has_value(), op, "clip and bounds are exclusive: give one or neither");
    check_dim(op, "bounds", *bounds, 2, "[2, C] (low, high)");
    CVOPS_CHECK(bounds->size(0) == 2 && bounds->size(1) == C, op, "bounds must have shape [2, ", C,
                "] (low and high per channel of x), got ", bounds->sizes());
    CVOPS_CHECK(bounds->scalar_type() == compute, op, "bounds must be ", compute,
                " (x's compute dtype), got ", bounds->scalar_type());
    check_same_device(op, "bounds", *bounds, "x", x);
  }
  std::vector<int64_t> shape{N};
  int64_t S = 1;
  for (int64_t d = 2; d < x.dim(); ++d) {
    shape.push_back(x.size(d));
    S *= x.size(d);
  }
  shape.push_back(words_of(C));
  auto bits = at::empty(shape, x.options().dtype(at::kLong));
  if (bits.numel() == 0) return bits;
  auto xs = x.to(compute).reshape({N, C, S});
  if (xs.stride(2) != 1 && xs.stride(1) != 1) xs = xs.contiguous();
  const OptTensor b = bounds.has_value() ? OptTensor(bounds->contiguous()) : std::nullopt;
  binary_loops()(op, x).pack(xs, clip, b, bits);
  return bits;
}

at::Tensor unpack_bits(const at::Tensor& bits, int64_t channels, at::ScalarType dtype, double low,
                       at::IntArrayRef padding, double pad_value) {
  constexpr const char* op = "unpack_bits";
  CVOPS_CHECK(channels >= 1, op, "channels must be >= 1, got ", channels);
  check_bits(op, "bits", bits, "[N, H, W, Cw]", channels);
  CVOPS_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              "dtype must be float32 or float64, got ", dtype);
  CVOPS_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0, op,
              "padding must be a pair (h, w) of ints >= 0, got ", padding);
  const int64_t N = bits.size(0), H = bits.size(1), W = bits.size(2);
  const std::vector<int64_t> shape{N, channels, H + 2 * padding[0], W + 2 * padding[1]};
  auto out = empty_output(op, "bits and padding", shape, bits.options().dtype(dtype));
  if (out.numel() == 0) return out;
  binary_loops()(op, bits).unpack(bits.contiguous(), channels, low, padding[0], padding[1],
                                  pad_value, out);
  return out;
}

at::Tensor xnor_conv2d(const at::Tensor& x_bits, const at::Tensor& weight_bits,
                       const at::Tensor& scale, const OptTensor& k_map, const OptTensor& bias,
                       int64_t channels, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t pad_value) {
  constexpr const char* op = "xnor_conv2d";
  CVOPS_CHECK(channels >= 1, op, "channels must be >= 1, got ", channels);
  check_bits(op, "x_bits", x_bits, "[B, H, W, Cw]", channels);
  check_bits(op, "weight_bits", weight_bits, "[O, kh, kw, Cw]", channels);
  check_same_device(op, "weight_bits", weight_bits, "x_bits", x_bits);
  CVOPS_CHECK(pad_value == 0 || pad_value == 1 || pad_value == -1, op,
              "pad_value must be 0, -1 or +1, got ", pad_value);
  const int64_t B = x_bits.size(0), H = x_bits.size(1), W = x_bits.size(2);
  const int64_t O = weight_bits.size(0), kh = weight_bits.size(1), kw = weight_bits.size(2);
  const Window2d window = window_of(op, kh, kw, stride, padding, dilation);
  const auto size = check_window(op, H, W, window);
  check_dim(op, "scale", scale, 1, "[O]");
  CVOPS_CHECK(scale.scalar_type() == at::kFloat || scale.scalar_type() == at::kDouble, op,
              "scale must be float32 or float64 (the output's dtype), got ", scale.scalar_type());
  check_same_device(op, "scale", scale, "x_bits", x_bits);
  CVOPS_CHECK(scale.size(0) == O, op, "scale must hold one value per filter [", O, "], got shape ",
              scale.sizes());
  check_epilogue(op, "k_map", k_map, scale, {B, 1, size.h, size.w});
  check_epilogue(op, "bias", bias, scale, {O});
  const int64_t taps = kh * kw;
  CVOPS_CHECK(scale.scalar_type() == at::kDouble || taps * channels <= (int64_t{1} << 24), op,
              "C·kh·kw = ", taps * channels,
              " exceeds the integers float32 holds exactly (2^24); use float64");
  // Channels-last output: the loops compute a pixel's filters together (and the next binary
  // layer packs channels-last input fastest).
  auto out = empty_output(op, "x_bits and weight_bits", {B, O, size.h, size.w}, scale.options(),
                          at::MemoryFormat::ChannelsLast);
  if (out.numel() == 0) return out;

  // Bits past the last channel must not count: clear them in both operands.
  auto xb = x_bits, wb = weight_bits;
  if (channels % 64 != 0) {
    const auto masks = channel_masks(channels, x_bits.device());
    xb = at::bitwise_and(x_bits, masks);
    wb = at::bitwise_and(weight_bits, masks);
  }
  const int64_t ph = window.h.padding, pw = window.w.padding;
  at::Tensor xp;
  if ((ph > 0 || pw > 0) && pad_value == 1) {
    xp = channel_masks(channels, x_bits.device())
             .expand({B, H + 2 * ph, W + 2 * pw, -1})
             .clone(at::MemoryFormat::Contiguous);
    xp.narrow(1, ph, H).narrow(2, pw, W).copy_(xb);
  } else if (ph > 0 || pw > 0) {
    xp = at::constant_pad_nd(xb, {0, 0, pw, pw, ph, ph}, 0);
  } else {
    xp = xb.contiguous();
  }
  const Geometry g{B,
                   channels,
                   words_of(channels),
                   H + 2 * ph,
                   W + 2 * pw,
                   O,
                   kh,
                   kw,
                   size.h,
                   size.w,
                   window.h.stride,
                   window.w.stride,
                   ph,
                   pw,
                   window.h.dilation,
                   window.w.dilation,
                   static_cast<PadValue>(pad_value)};
  const auto contiguous = [](const OptTensor& t) -> OptTensor {
    return t.has_value() ? OptTensor(t->contiguous()) : std::nullopt;
  };
  binary_loops()(op, x_bits)
      .xnor(xp, wb.contiguous(), g, scale.contiguous(), contiguous(k_map), contiguous(bias), out);
  return out;
}

CVOPS_LOOP_TABLE(binary_loops, "binary")

CVOPS_FAMILY_OPS(binary_loops, ops) {
  ops.impl("_pack_bits", &pack_bits)
      .impl("_unpack_bits", &unpack_bits)
      .impl("_xnor_conv2d", &xnor_conv2d);
}

}  // namespace cvops::binary
