// CPU loops of the binary family: packing by comparison masks, and the XNOR convolution as an
// implicit GEMM over the packed words (no im2col): pixel × filter tiles of popcount(x ^ w) held in
// vector registers over every tap (binary_cpu_bodies.h, at the CPU level chosen at load), then the
// float epilogue per output.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "binary/binary.h"
#include "common/amx.h"
#include "common/cpu_levels.h"
#include "common/loop_table.h"
#include "common/window.h"

namespace cvops::binary {
namespace {

// The walk of a tile over the taps: `rows` kernel rows, each `segs` runs of `len` words.
struct Walk {
  int64_t rows, x_row, w_row, segs, x_seg, w_seg, len;
};

template <typename T>
struct XnorArgs {
  const uint64_t* x;             // padded bits [B, Hp, Wp, Cw]
  const int64_t* w;              // filter vectors [ceil(O / lanes), kh·kw·Cw, lanes]
  // A zero pad: per (row pattern, column pattern) of padded taps, Σ over them of C − 2·popc(w_tap)
  // for each filter [patterns, ceil(O / lanes) · lanes]; pattern 0 is the image's inside. Else null.
  const int64_t* correction;
  const int32_t* row_pattern;  // [OH]
  const int32_t* col_pattern;  // [OW]
  int64_t col_patterns;
  const T* scale;  // [ceil(O / lanes) · lanes], the tail 0
  const T* k_map;  // [B, OH·OW] or null
  const T* bias;  // like scale, or null
  T* out;  // [B, OH·OW, O] (channels-last)
  Geometry g;
  Walk walk;
};

// The AMX path's operands: byte copies of the padded input and of the filters, and tiles of 16
// output pixels whose input bytes lie row_stride apart.
template <typename T>
struct AmxArgs {
  const int8_t* x;  // [B, Hp, Wp, 64·Cw] ±1 (0: channel tails, a zero pad), then slack
  const int8_t* w;  // [filter_tiles, steps, 16, 16, 4] (expand_filters)
  const int64_t* tile_offset;  // [pixel_tiles]: where a tile's first pixel's window starts in x
  const int64_t* tile_pixels;  // [pixel_tiles, 16]: the output pixel (b, oh, ow) of each row, or −1
  const int64_t* step_offset;  // [steps]: a step's (tap, word) offset in x from its window's start
  int64_t row_stride, pixel_tiles, filter_tiles, steps, out_channels;
  const T* scale;  // [16 · filter_tiles], the tail 0
  const T* k_map;  // [B, OH·OW] or null
  const T* bias;  // like scale, or null
  T* out;  // [B, OH·OW, O] (channels-last)
};

#define CVOPS_CPU_BODIES "binary/binary_cpu_bodies.h"
#include "common/cpu_levels_compile.h"

void pack_cpu(const at::Tensor& x, std::optional<double> clip,
              const std::optional<at::Tensor>& bounds, at::Tensor& bits) {
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
  // Channels-last memory packs pixel by pixel (movemask over contiguous channels); otherwise
  // sample by sample, a block of pixels at a time.
  const bool channels_contiguous = x.stride(1) == 1 && C > 1 && x.stride(2) != 1;
  auto* dst = reinterpret_cast<uint64_t*>(bits.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_pack_bits_cpu", [&] {
    using T = scalar_t;
    const T clip_value = clip.has_value() ? static_cast<T>(*clip) : T(0);
    const T* clip_ptr = clip.has_value() ? &clip_value : nullptr;
    const T* low = bounds.has_value() ? bounds->const_data_ptr<T>() : nullptr;
    const T* high = bounds.has_value() ? low + C : nullptr;
    const auto pack = CVOPS_CPU_SELECT(pack_rows<T>);
    const int64_t rows = channels_contiguous ? N * S : N;
    at::parallel_for(0, rows, channels_contiguous ? 256 : 1, [&](int64_t begin, int64_t end) {
      pack(x.const_data_ptr<T>(), C, S, x.stride(0), x.stride(1), x.stride(2), channels_contiguous,
           clip_ptr, low, high, begin, end, dst);
    });
  });
}

// Per-filter values [O] padded with zeros to `size` (whole vectors or tiles of filters).
template <typename T>
std::vector<T> padded_filters(const at::Tensor& values, int64_t size) {
  std::vector<T> out(size, T(0));
  std::copy(values.const_data_ptr<T>(), values.const_data_ptr<T>() + values.numel(), out.begin());
  return out;
}

#if defined(__x86_64__)
// The XNOR convolution on AMX: the bits become ±1 bytes (8 times their size, still a quarter of
// the float input) and TDPBSSD sums 16 pixels × 16 filters × 64 channels an instruction, almost
// three times the 512-bit XOR-popcounts' rate while the tile unit is free (cpu_levels.h). The
// dots are exact integers, so the outputs are the popcount tiles' bits.
void xnor_amx_cpu(const at::Tensor& xp, const at::Tensor& weight, const Geometry& g,
                  const at::Tensor& scale, const std::optional<at::Tensor>& k_map,
                  const std::optional<at::Tensor>& bias, at::Tensor& out) {
  const int64_t B = g.batch, Cw = g.words, Cp = 64 * Cw, Hp = g.padded_h, Wp = g.padded_w;
  const int64_t OH = g.out_h, OW = g.out_w, O = g.out_channels, kh = g.kernel_h, kw = g.kernel_w;
  const int64_t steps = kh * kw * Cw, filter_tiles = (O + 15) / 16;
  // Pixel tiles: 16 rows of TDPBSSD's first operand, each an output pixel's window in x, a
  // constant stride apart. At stride 1 the padded input read as one run of pixels (windows that
  // leave the image unused), which packs narrow images densely; else one output row at a time.
  std::vector<int64_t> tile_offset, tile_pixels;
  int64_t row_stride = 0;
  auto by_rows = [&] {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < OH; ++i)
        for (int64_t j0 = 0; j0 < OW; j0 += 16) {
          tile_offset.push_back(((b * Hp + i * g.stride_h) * Wp + j0 * g.stride_w) * Cp);
          for (int64_t r = 0; r < 16; ++r)
            tile_pixels.push_back(j0 + r < OW ? (b * OH + i) * OW + j0 + r : -1);
        }
    row_stride = g.stride_w * Cp;
  };
  auto as_one_run = [&] {
    for (int64_t p0 = 0; p0 < B * Hp * Wp; p0 += 16) {
      int64_t pixels[16], used = 0;
      for (int64_t r = 0; r < 16; ++r) {
        const int64_t p = p0 + r, b = p / (Hp * Wp), i = p % (Hp * Wp) / Wp, j = p % Wp;
        pixels[r] = b < B && i < OH && j < OW ? (b * OH + i) * OW + j : -1;
        used += pixels[r] >= 0;
      }
      if (used == 0) continue;
      tile_offset.push_back(p0 * Cp);
      tile_pixels.insert(tile_pixels.end(), pixels, pixels + 16);
    }
    row_stride = Cp;
  };
  const int64_t row_tiles = B * OH * ((OW + 15) / 16);
  if (g.stride_h == 1 && g.stride_w == 1) {
    as_one_run();
    if (static_cast<int64_t>(tile_offset.size()) > row_tiles) {
      tile_offset.clear();
      tile_pixels.clear();
      by_rows();
    }
  } else {
    by_rows();
  }
  const int64_t pixel_tiles = static_cast<int64_t>(tile_offset.size());
  std::vector<int64_t> step_offset;
  for (int64_t u = 0; u < kh; ++u)
    for (int64_t v = 0; v < kw; ++v)
      for (int64_t k = 0; k < Cw; ++k)
        step_offset.push_back((u * g.dilation_h * Wp + v * g.dilation_w) * Cp + 64 * k);
  // Unused rows of a tile read past the input: slack, zeroed.
  const int64_t input_bytes = B * Hp * Wp * Cp;
  const int64_t bytes =
      std::max(input_bytes, tile_offset.back() + 15 * row_stride + step_offset.back() + 64);
  auto x8 = at::empty({bytes}, xp.options().dtype(at::kChar));
  auto w8 = at::empty({filter_tiles * steps * 1024}, xp.options().dtype(at::kChar));
  int8_t* x_bytes = x8.data_ptr<int8_t>();
  std::fill(x_bytes + input_bytes, x_bytes + bytes, int8_t{0});
  const auto* x_bits = reinterpret_cast<const uint64_t*>(xp.const_data_ptr<int64_t>());
  at::parallel_for(0, B * Hp, 4, [&](int64_t begin, int64_t end) {
    cpu_avx512::expand_input(x_bits, g, begin, end, x_bytes);
  });
  const auto* w_bits = reinterpret_cast<const uint64_t*>(weight.const_data_ptr<int64_t>());
  at::parallel_for(0, filter_tiles, 1, [&](int64_t begin, int64_t end) {
    cpu_avx512::expand_filters(w_bits, O, steps, begin, end, w8.data_ptr<int8_t>());
  });
  AT_DISPATCH_FLOATING_TYPES(scale.scalar_type(), "cvops_xnor_amx_cpu", [&] {
    using T = scalar_t;
    const std::vector<T> scale_v = padded_filters<T>(scale, 16 * filter_tiles);
    const std::vector<T> bias_v =
        bias.has_value() ? padded_filters<T>(*bias, 16 * filter_tiles) : std::vector<T>();
    const AmxArgs<T> args{x_bytes,
                          w8.const_data_ptr<int8_t>(),
                          tile_offset.data(),
                          tile_pixels.data(),
                          step_offset.data(),
                          row_stride,
                          pixel_tiles,
                          filter_tiles,
                          steps,
                          O,
                          scale_v.data(),
                          k_map.has_value() ? k_map->const_data_ptr<T>() : nullptr,
                          bias.has_value() ? bias_v.data() : nullptr,
                          out.data_ptr<T>()};
    // Pairs of pixel tiles per task; each output is written once.
    at::parallel_for(0, (pixel_tiles + 1) / 2, 1,
                     [&](int64_t begin, int64_t end) { cpu_avx512::xnor_amx(args, begin, end); });
  });
}
#endif

void xnor_cpu(const at::Tensor& xp, const at::Tensor& weight, const Geometry& g,
              const at::Tensor& scale, const std::optional<at::Tensor>& k_map,
              const std::optional<at::Tensor>& bias, at::Tensor& out) {
#if defined(__x86_64__)
  // TDPBSSD accumulates in int32.
  if (cpu_level() == CpuLevel::kAmx &&
      g.kernel_h * g.kernel_w * g.words * 64 < (int64_t{1} << 31)) {
    xnor_amx_cpu(xp, weight, g, scale, k_map, bias, out);
    return;
  }
#endif
  const int64_t Cw = g.words, O = g.out_channels, kw = g.kernel_w;
  const int64_t taps = g.kernel_h * kw, M = g.batch * g.out_h * g.out_w;
  const auto* w = weight.const_data_ptr<int64_t>();
  // A kernel row is one run of kw·Cw words at dilation 1, else kw runs of Cw words.
  const bool one_run = g.dilation_w == 1;
  const Walk walk{
      g.kernel_h, g.dilation_h * g.padded_w * Cw, kw * Cw, one_run ? 1 : kw, g.dilation_w * Cw,
      Cw,         one_run ? kw * Cw : Cw};
  const int64_t lanes = CVOPS_CPU_SELECT(lanes)(), padded_o = (O + lanes - 1) / lanes * lanes;
  const auto transpose = CVOPS_CPU_SELECT(transpose_filters);
  std::vector<int64_t> filters(padded_o * taps * Cw);
  transpose(w, O, taps * Cw, filters.data());
  // A zero pad leaves its taps out: their zero words were counted as −1s, which the epilogue
  // takes back. Which taps of a window are padding depends only on its row's and its column's
  // pattern, so the corrections are tabled per pair of patterns.
  std::vector<int64_t> correction;
  std::vector<int32_t> row_pattern(g.out_h), col_pattern(g.out_w);
  int64_t col_patterns = 0;
  if (g.pad_value == PadValue::kZero && (g.pad_h > 0 || g.pad_w > 0)) {
    const int64_t H = g.padded_h - 2 * g.pad_h, W = g.padded_w - 2 * g.pad_w;
    // Distinct patterns of taps in the padding along one axis; the empty pattern first.
    auto patterns_of = [](int64_t outputs, int64_t kernel, const Window1d& win, int64_t size,
                          std::vector<int32_t>& index) {
      std::vector<std::vector<bool>> found{std::vector<bool>(kernel, false)};
      for (int64_t i = 0; i < outputs; ++i) {
        std::vector<bool> out(kernel);
        for (int64_t u = 0; u < kernel; ++u)
          out[u] = in_padding(i * win.stride + u * win.dilation, win.padding, size);
        auto it = std::find(found.begin(), found.end(), out);
        index[i] = static_cast<int32_t>(it - found.begin());
        if (it == found.end()) found.push_back(out);
      }
      return found;
    };
    const auto rows = patterns_of(g.out_h, g.kernel_h,
                                  {g.kernel_h, g.stride_h, g.pad_h, g.dilation_h}, H, row_pattern);
    const auto cols =
        patterns_of(g.out_w, kw, {kw, g.stride_w, g.pad_w, g.dilation_w}, W, col_pattern);
    col_patterns = static_cast<int64_t>(cols.size());
    std::vector<int64_t> tap_popcount(O * taps);  // [O, kh·kw]
    for (int64_t i = 0; i < O * taps; ++i)
      for (int64_t k = 0; k < Cw; ++k) tap_popcount[i] += __builtin_popcountll(w[i * Cw + k]);
    correction.assign(rows.size() * cols.size() * padded_o, 0);
    for (size_t r = 0; r < rows.size(); ++r) {
      for (size_t c = 0; c < cols.size(); ++c) {
        int64_t* table = correction.data() + (r * cols.size() + c) * padded_o;
        for (int64_t u = 0; u < g.kernel_h; ++u) {
          for (int64_t v = 0; v < kw; ++v) {
            if (!rows[r][u] && !cols[c][v]) continue;
            for (int64_t o = 0; o < O; ++o)
              table[o] += g.channels - 2 * tap_popcount[o * taps + u * kw + v];
          }
        }
      }
    }
  }
  AT_DISPATCH_FLOATING_TYPES(scale.scalar_type(), "cvops_xnor_cpu", [&] {
    using T = scalar_t;
    const std::vector<T> scale_v = padded_filters<T>(scale, padded_o);
    const std::vector<T> bias_v =
        bias.has_value() ? padded_filters<T>(*bias, padded_o) : std::vector<T>();
    const XnorArgs<T> args{reinterpret_cast<const uint64_t*>(xp.const_data_ptr<int64_t>()),
                           filters.data(),
                           correction.empty() ? nullptr : correction.data(),
                           row_pattern.data(),
                           col_pattern.data(),
                           col_patterns,
                           scale_v.data(),
                           k_map.has_value() ? k_map->const_data_ptr<T>() : nullptr,
                           bias.has_value() ? bias_v.data() : nullptr,
                           out.data_ptr<T>(),
                           g,
                           walk};
    const auto pixels = CVOPS_CPU_SELECT(xnor_pixels<T>);
    // Blocks of pixels per task; each output is written once, so results do not depend on the
    // thread count.
    at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) { pixels(args, begin, end); });
  });
}

// One task per (sample, word): rows of up to 16 pixels' words, each shifted by channel c into
// row c's contiguous outputs (the inner loop vectorises); then the border of each plane.
void unpack_cpu(const at::Tensor& bits, int64_t channels, double low, int64_t pad_h, int64_t pad_w,
                double pad_value, at::Tensor& out) {
  const int64_t N = bits.size(0), H = bits.size(1), W = bits.size(2), Cw = bits.size(3);
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  const auto* src = reinterpret_cast<const uint64_t*>(bits.const_data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_unpack_bits_cpu", [&] {
    using T = scalar_t;
    T* dst = out.data_ptr<T>();
    const T one = T(1), zero = static_cast<T>(low), border = static_cast<T>(pad_value);
    at::parallel_for(0, N * Cw, 1, [&](int64_t begin, int64_t end) {
      constexpr int64_t kRun = 16;
      uint64_t words[kRun];
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / Cw, k = task % Cw, c0 = 64 * k;
        const int64_t c1 = std::min<int64_t>(64, channels - c0);
        for (int64_t h = 0; h < H; ++h) {
          for (int64_t w0 = 0; w0 < W; w0 += kRun) {
            const int64_t run = std::min(kRun, W - w0);
            for (int64_t q = 0; q < run; ++q) words[q] = src[((n * H + h) * W + w0 + q) * Cw + k];
            for (int64_t c = 0; c < c1; ++c) {
              T* row = dst + ((n * channels + c0 + c) * Hp + h + pad_h) * Wp + pad_w + w0;
              for (int64_t q = 0; q < run; ++q) row[q] = (words[q] >> c) & 1 ? one : zero;
            }
          }
        }
        if (pad_h == 0 && pad_w == 0) continue;
        for (int64_t c = c0; c < c0 + c1; ++c) {
          T* plane = dst + (n * channels + c) * Hp * Wp;
          std::fill(plane, plane + pad_h * Wp, border);
          std::fill(plane + (pad_h + H) * Wp, plane + Hp * Wp, border);
          for (int64_t h = pad_h; h < pad_h + H; ++h) {
            std::fill(plane + h * Wp, plane + h * Wp + pad_w, border);
            std::fill(plane + h * Wp + pad_w + W, plane + (h + 1) * Wp, border);
          }
        }
      }
    });
  });
}

constexpr Loops kCpuLoops{&pack_cpu, &xnor_cpu, &unpack_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(binary_loops, kCpu, kCpuLoops);

}  // namespace cvops::binary
