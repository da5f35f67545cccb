#pragma once
// The binary family: XNOR convolution and fully connected layers over bit-packed ±1 tensors
// (XNOR-Net). sign(v) = +1 where v >= 0 (−0.0 included), −1 elsewhere (NaN included).
//
// Bit layout (cvops.pack_bits): x [N, C, *spatial] packs into int64 words [N, *spatial, Cw],
// Cw = ceil(C / 64): bit c % 64 of word c / 64 is 1 where x[n, c, ...] >= 0, the tail bits of the
// last word are 0, and every pixel's words are contiguous (channels last), so a filter tap is
// Cw consecutive words and a kernel row at dilation 1 is kw·Cw consecutive words.
//
// A tap's ±1 dot product over C channels is C − 2·popcount(x_word ^ w_word) summed over the
// words (tail bits are 0 in both, so they never count). The op bodies (binary.cpp) validate,
// pack and pad; each device supplies the loops below.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "common/loop_table.h"

namespace cvops::binary {

// What a tap outside the input holds: 0 (contributes nothing, F.conv2d's zero padding), −1 or +1.
enum class PadValue : int { kZero = 0, kMinusOne = -1, kPlusOne = 1 };

struct Geometry {
  int64_t batch, channels, words;                // B, C, Cw
  int64_t padded_h, padded_w;                    // the packed, padded input [B, Hp, Wp, Cw]
  int64_t out_channels, kernel_h, kernel_w;      // weight [O, kh, kw, Cw]
  int64_t out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  PadValue pad_value;
};

// The 64-bit word holding the bits of channels 64·k .. 64·k + 63 that exist when there are C.
C10_HOST_DEVICE inline uint64_t channel_word_mask(int64_t k, int64_t C) {
  const int64_t bits = C - 64 * k;
  return bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
}

// Whether padded row (or column) position q of a window lies outside the input of `size`, padded
// by `pad` on each side: such taps hold the pad value.
C10_HOST_DEVICE inline bool in_padding(int64_t q, int64_t pad, int64_t size) {
  return q < pad || q >= pad + size;
}

struct Loops {
  // bits [N, S, Cw] from x [N, C, S] (float or double): the sign bits; with clip the bits of
  // |x| <= clip (the straight-through estimator's mask); with bounds [2, C] (x's dtype,
  // contiguous) the bits of bounds[0][c] <= x <= bounds[1][c] (a folded BatchNorm's sign). NaN
  // gives 0 under clip and bounds.
  void (*pack)(const at::Tensor& x, std::optional<double> clip,
               const std::optional<at::Tensor>& bounds, at::Tensor& bits);
  // out [B, O, OH, OW] (scale's dtype), channels-last in memory ([B, OH, OW, O]): out = dot · scale[o] (· k_map[b, 0, oh, ow]) (+ bias[o]),
  // each product rounded in that order, from the padded bits xp [B, Hp, Wp, Cw] (pad words already
  // written for ±1; zero words for a zero pad, whose taps the loops leave out of the dot).
  void (*xnor)(const at::Tensor& xp, const at::Tensor& weight, const Geometry& g,
               const at::Tensor& scale, const std::optional<at::Tensor>& k_map,
               const std::optional<at::Tensor>& bias, at::Tensor& out);
  // out [N, C, H + 2·pad_h, W + 2·pad_w] (float or double, contiguous) from bits [N, H, W, Cw]:
  // 1 where a bit is set, `low` where not, pad_value in the border.
  void (*unpack)(const at::Tensor& bits, int64_t channels, double low, int64_t pad_h, int64_t pad_w,
                 double pad_value, at::Tensor& out);
};

LoopTable<Loops>& binary_loops();

}  // namespace cvops::binary
