// CUDA loops of the binary family.
//  - pack: one thread per (sample, word, pixel), pixels fastest (coalesced reads of NCHW x).
//  - xnor, sm_80+: the 1-bit tensor cores. A warp computes 16 pixels × 32 filters with
//    mma.sync.m16n8k256 .b1 .and.popc (AND is native on sm_90, the .xor form is emulated there):
//    per 256-bit slice of the flattened (tap, word) dimension, one BMMA per 8 filters gives
//    popc(a & b), and dot = K − 2·(popc(a) + popc(b) − 2·popc(a & b)) with the pixel's and the
//    filter's popcounts summed from the same fragments. Fused epilogue (scale, K map, bias).
//  - xnor, other archs (or CVOPS_CUDA_BMMA=0): one thread per output, popc(a ^ b) per word
//    (LOP3 + POPC).
// Every output is written once: no atomics, results independent of the launch shape.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "binary/binary.h"
#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "common/loop_table.h"
#include "common/rounding.h"

namespace cvops::binary {
namespace {

constexpr int kThreads = 256;

// What a value packs to (binary.h, Loops::pack).
enum class PackRule { kSign, kClip, kBounds };

template <typename T, PackRule kRule>
__global__ void __launch_bounds__(kThreads)
    pack_kernel(const T* __restrict__ x, int64_t N, int64_t C, int64_t S, int64_t xn, int64_t xc,
                int64_t xs, T clip, const T* __restrict__ bounds, uint64_t* __restrict__ bits) {
  const int64_t words = (C + 63) / 64, total = N * words * S;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = e % S, k = (e / S) % words, n = e / (S * words);
    const int64_t c0 = 64 * k, count = C - c0 < 64 ? C - c0 : 64;
    const T* src = x + n * xn + c0 * xc + s * xs;
    uint64_t word = 0;
    for (int64_t c = 0; c < count; ++c) {
      const T v = src[c * xc];
      // Ordered comparisons: −0.0 gives a sign bit of 1, NaN gives 0 (for every rule).
      bool bit;
      if constexpr (kRule == PackRule::kClip) {
        bit = v <= clip && v >= -clip;
      } else if constexpr (kRule == PackRule::kBounds) {
        bit = v >= bounds[c0 + c] && v <= bounds[C + c0 + c];
      } else {
        bit = v >= T(0);
      }
      word |= uint64_t(bit) << c;
    }
    bits[(n * S + s) * words + k] = word;
  }
}

void pack_cuda(const at::Tensor& x, std::optional<double> clip,
               const std::optional<at::Tensor>& bounds, at::Tensor& bits) {
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
  const int64_t total = N * ((C + 63) / 64) * S;
  c10::cuda::CUDAGuard guard(x.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_pack_bits_cuda", [&] {
    using T = scalar_t;
    auto* out = reinterpret_cast<uint64_t*>(bits.data_ptr<int64_t>());
    const unsigned blocks = grid_stride_blocks(total, kThreads);
    const T clip_value = clip.has_value() ? static_cast<T>(*clip) : T(0);
    const T* bound = bounds.has_value() ? bounds->const_data_ptr<T>() : nullptr;
    auto launch = [&](auto rule) {
      pack_kernel<T, decltype(rule)::value>
          <<<blocks, kThreads, 0, stream>>>(x.const_data_ptr<T>(), N, C, S, x.stride(0),
                                            x.stride(1), x.stride(2), clip_value, bound, out);
    };
    if (clip.has_value()) {
      launch(std::integral_constant<PackRule, PackRule::kClip>{});
    } else if (bounds.has_value()) {
      launch(std::integral_constant<PackRule, PackRule::kBounds>{});
    } else {
      launch(std::integral_constant<PackRule, PackRule::kSign>{});
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// Where output pixel m's window starts in the padded bits, and its row and column.
struct PixelPosition {
  int64_t base, b, q, i, j;
};

__device__ __forceinline__ PixelPosition pixel_position(const Geometry& g, int64_t m) {
  const int64_t P = g.out_h * g.out_w, b = m / P, q = m % P, i = q / g.out_w, j = q % g.out_w;
  return {((b * g.padded_h + i * g.stride_h) * g.padded_w + j * g.stride_w) * g.words, b, q, i, j};
}

// Word kk of a pixel's flattened (tap, word) sequence, as an offset from its window's start.
__device__ __forceinline__ int64_t tap_word_offset(const Geometry& g, int64_t kk) {
  const int64_t tap = kk / g.words, k = kk % g.words;
  const int64_t u = tap / g.kernel_w, v = tap % g.kernel_w;
  return (u * g.dilation_h * g.padded_w + v * g.dilation_w) * g.words + k;
}

// The zero pad's taps, counted as −1 words in the dot, taken back: Σ (C − 2·popc(w_tap)).
__device__ __forceinline__ int64_t zero_pad_correction(const Geometry& g, const uint64_t* w_o,
                                                       int64_t i, int64_t j) {
  const int64_t H = g.padded_h - 2 * g.pad_h, W = g.padded_w - 2 * g.pad_w;
  int64_t correction = 0;
  for (int64_t u = 0; u < g.kernel_h; ++u) {
    const bool row_out = in_padding(i * g.stride_h + u * g.dilation_h, g.pad_h, H);
    for (int64_t v = 0; v < g.kernel_w; ++v) {
      if (!row_out && !in_padding(j * g.stride_w + v * g.dilation_w, g.pad_w, W)) continue;
      int64_t pc = 0;
      const uint64_t* tap = w_o + (u * g.kernel_w + v) * g.words;
      for (int64_t k = 0; k < g.words; ++k) pc += __popcll(tap[k]);
      correction += g.channels - 2 * pc;
    }
  }
  return correction;
}

template <typename T>
struct Epilogue {
  const T* scale;
  const T* k_map;
  const T* bias;
  T* out;
  __device__ __forceinline__ void store(const Geometry& g, const PixelPosition& p, int64_t o,
                                        int64_t dot) const {
    const int64_t P = g.out_h * g.out_w;
    // Each product rounded on its own, as on the CPU (common/rounding.h): no FMA with the bias.
    T value = mul_rn(static_cast<T>(dot), scale[o]);
    if (k_map != nullptr) value = mul_rn(value, k_map[p.b * P + p.q]);
    if (bias != nullptr) value = value + bias[o];
    out[(p.b * P + p.q) * g.out_channels + o] = value;  // channels-last
  }
};

// One output per thread, filters fastest (coalesced channels-last stores): popc(a ^ b) over every
// tap word.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    xnor_popc_kernel(const uint64_t* __restrict__ xp, const uint64_t* __restrict__ w, Geometry g,
                     bool zero_pad, Epilogue<T> epilogue) {
  const int64_t P = g.out_h * g.out_w, total = g.batch * g.out_channels * P;
  const int64_t taps = g.kernel_h * g.kernel_w, tap_words = taps * g.words;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = e % g.out_channels, q = (e / g.out_channels) % P,
                  b = e / (P * g.out_channels);
    const PixelPosition p = pixel_position(g, b * P + q);
    const uint64_t* w_o = w + o * tap_words;
    int64_t count = 0;
    for (int64_t kk = 0; kk < tap_words; ++kk) {
      count += __popcll(xp[p.base + tap_word_offset(g, kk)] ^ w_o[kk]);
    }
    int64_t dot = taps * g.channels - 2 * count;
    if (zero_pad) dot -= zero_pad_correction(g, w_o, p.i, p.j);
    epilogue.store(g, p, o, dot);
  }
}

// The 1-bit tensor-core path. A warp's tile: 16 pixels (rows) × kTileN filters; per 256-bit
// slice each thread holds the A words (row g, words t and t + 4) and (row g + 8, the same), and
// per 8 filters the B words (filter g, words t and t + 4), g = lane / 4, t = lane % 4 (the
// m16n8k256 fragment layout of the PTX ISA).
constexpr int kWarps = 4, kTileN = 32, kTilesN = kTileN / 8;

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    xnor_bmma_kernel(const uint32_t* __restrict__ xp, const uint32_t* __restrict__ w, Geometry g,
                     bool zero_pad, Epilogue<T> epilogue) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // Each (tap, word) position's offset from a window's first word, computed once per block.
  extern __shared__ int32_t tap_offsets[];
  for (int64_t kk = threadIdx.x; kk < g.kernel_h * g.kernel_w * g.words; kk += blockDim.x) {
    tap_offsets[kk] = static_cast<int32_t>(tap_word_offset(g, kk));
  }
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int group = lane / 4, t = lane % 4;
  const int64_t M = g.batch * g.out_h * g.out_w;
  const int64_t taps = g.kernel_h * g.kernel_w, tap_words = taps * g.words;  // 64-bit words
  const int64_t k32 = 2 * tap_words, slices = (k32 + 7) / 8;
  const int64_t m0 = (int64_t(blockIdx.x) * kWarps + warp) * 16, n0 = int64_t(blockIdx.y) * kTileN;
  const int64_t rows[2] = {m0 + group, m0 + group + 8};
  PixelPosition pos[2];
  for (int r = 0; r < 2; ++r) pos[r] = pixel_position(g, rows[r] < M ? rows[r] : M - 1);
  // The 32-bit word k of a pixel's (tap, word) sequence (low half first), 0 past its end.
  auto a_word = [&](int r, int64_t k) -> uint32_t {
    if (rows[r] >= M || k >= k32) return 0;
    return xp[2 * (pos[r].base + tap_offsets[k >> 1]) + (k & 1)];
  };
  auto b_word = [&](int64_t o, int64_t k) -> uint32_t {
    return (o < g.out_channels && k < k32) ? w[o * 2 * tap_words + k] : 0;
  };
  int acc[kTilesN][4] = {};
  int popc_a[2] = {0, 0}, popc_b[kTilesN] = {};
  for (int64_t s = 0; s < slices; ++s) {
    const int64_t k_lo = s * 8 + t, k_hi = k_lo + 4;
    const uint32_t a0 = a_word(0, k_lo), a1 = a_word(1, k_lo), a2 = a_word(0, k_hi),
                   a3 = a_word(1, k_hi);
    popc_a[0] += __popc(a0) + __popc(a2);
    popc_a[1] += __popc(a1) + __popc(a3);
#pragma unroll
    for (int n = 0; n < kTilesN; ++n) {
      const int64_t o = n0 + n * 8 + group;
      const uint32_t b0 = b_word(o, k_lo), b1 = b_word(o, k_hi);
      popc_b[n] += __popc(b0) + __popc(b1);
      asm volatile(
          "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
          "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
          : "+r"(acc[n][0]), "+r"(acc[n][1]), "+r"(acc[n][2]), "+r"(acc[n][3])
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
  }
  // Whole-row and whole-filter popcounts: the sums of the four threads of a group.
  for (int r = 0; r < 2; ++r) {
    popc_a[r] += __shfl_xor_sync(0xffffffff, popc_a[r], 1);
    popc_a[r] += __shfl_xor_sync(0xffffffff, popc_a[r], 2);
  }
#pragma unroll
  for (int n = 0; n < kTilesN; ++n) {
    popc_b[n] += __shfl_xor_sync(0xffffffff, popc_b[n], 1);
    popc_b[n] += __shfl_xor_sync(0xffffffff, popc_b[n], 2);
  }
  const int64_t full_dot = taps * g.channels;
#pragma unroll
  for (int n = 0; n < kTilesN; ++n) {
    for (int c = 0; c < 2; ++c) {
      // Accumulator c (and c + 2) holds filter column 2t + c of rows g (and g + 8); that
      // filter's popcount sits with the group that loaded it, lanes 4·(2t + c) onwards.
      const int column = 2 * t + c;
      const int popc_filter = __shfl_sync(0xffffffff, popc_b[n], 4 * column);
      const int64_t o = n0 + n * 8 + column;
      for (int r = 0; r < 2; ++r) {
        if (rows[r] >= M || o >= g.out_channels) continue;
        const int64_t mismatches = popc_a[r] + popc_filter - 2 * int64_t(acc[n][2 * r + c]);
        int64_t dot = full_dot - 2 * mismatches;
        if (zero_pad) {
          dot -= zero_pad_correction(g, reinterpret_cast<const uint64_t*>(w) + o * tap_words,
                                     pos[r].i, pos[r].j);
        }
        epilogue.store(g, pos[r], o, dot);
      }
    }
  }
#else
  __trap();  // the host runs this kernel only where it was compiled for sm_80+ (use_tensor_cores)
#endif
}

// The tensor-core kernel's table of tap offsets: at most 48 KiB of shared memory.
constexpr int64_t kMaxTapWords = 12288;

// The tensor-core path on sm_80+ when its table of tap offsets fits (shared memory, int32), unless
// CVOPS_CUDA_BMMA=0 (read once) asks for the LOP3/POPC one.
bool use_tensor_cores(const Geometry& g) {
  static const bool allowed = [] {
    const char* v = std::getenv("CVOPS_CUDA_BMMA");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  const int64_t tap_words = g.kernel_h * g.kernel_w * g.words;
  const int64_t last_offset =
      ((g.kernel_h - 1) * g.dilation_h * g.padded_w + (g.kernel_w - 1) * g.dilation_w + 1) *
      g.words;
  return allowed && compiled_for(xnor_bmma_kernel<float>, 80) && tap_words <= kMaxTapWords &&
         last_offset <= INT32_MAX;
}

void xnor_cuda(const at::Tensor& xp, const at::Tensor& weight, const Geometry& g,
               const at::Tensor& scale, const std::optional<at::Tensor>& k_map,
               const std::optional<at::Tensor>& bias, at::Tensor& out) {
  c10::cuda::CUDAGuard guard(out.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const bool zero_pad = g.pad_value == PadValue::kZero && (g.pad_h > 0 || g.pad_w > 0);
  const int64_t M = g.batch * g.out_h * g.out_w;
  const bool tensor_cores = use_tensor_cores(g);
  AT_DISPATCH_FLOATING_TYPES(scale.scalar_type(), "cvops_xnor_cuda", [&] {
    using T = scalar_t;
    const Epilogue<T> epilogue{
        scale.const_data_ptr<T>(), k_map.has_value() ? k_map->const_data_ptr<T>() : nullptr,
        bias.has_value() ? bias->const_data_ptr<T>() : nullptr, out.data_ptr<T>()};
    if (tensor_cores) {
      const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(M, 16 * kWarps)),
                      static_cast<unsigned>(ceil_div<int64_t>(g.out_channels, kTileN)));
      CVOPS_CHECK(grid.y <= kMaxGridYZ, "xnor_conv2d", "the CUDA kernel takes at most ",
                  kMaxGridYZ * kTileN, " filters, got ", g.out_channels);
      const size_t table_bytes = sizeof(int32_t) * g.kernel_h * g.kernel_w * g.words;
      xnor_bmma_kernel<T><<<grid, kWarps * 32, table_bytes, stream>>>(
          reinterpret_cast<const uint32_t*>(xp.const_data_ptr<int64_t>()),
          reinterpret_cast<const uint32_t*>(weight.const_data_ptr<int64_t>()), g, zero_pad,
          epilogue);
    } else {
      xnor_popc_kernel<T><<<grid_stride_blocks(out.numel(), kThreads), kThreads, 0, stream>>>(
          reinterpret_cast<const uint64_t*>(xp.const_data_ptr<int64_t>()),
          reinterpret_cast<const uint64_t*>(weight.const_data_ptr<int64_t>()), g, zero_pad,
          epilogue);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// One thread per output element, columns fastest (coalesced stores).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    unpack_kernel(const uint64_t* __restrict__ bits, int64_t N, int64_t C, int64_t H, int64_t W,
                  int64_t Cw, int64_t pad_h, int64_t pad_w, T low, T pad_value,
                  T* __restrict__ out) {
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w, total = N * C * Hp * Wp;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = e % Wp - pad_w, h = (e / Wp) % Hp - pad_h, c = (e / (Wp * Hp)) % C;
    const int64_t n = e / (Wp * Hp * C);
    T value = pad_value;
    if (h >= 0 && h < H && w >= 0 && w < W) {
      value = (bits[((n * H + h) * W + w) * Cw + c / 64] >> (c % 64)) & 1 ? T(1) : low;
    }
    out[e] = value;
  }
}

void unpack_cuda(const at::Tensor& bits, int64_t channels, double low, int64_t pad_h, int64_t pad_w,
                 double pad_value, at::Tensor& out) {
  c10::cuda::CUDAGuard guard(out.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_unpack_bits_cuda", [&] {
    using T = scalar_t;
    unpack_kernel<T><<<grid_stride_blocks(out.numel(), kThreads), kThreads, 0, stream>>>(
        reinterpret_cast<const uint64_t*>(bits.const_data_ptr<int64_t>()), bits.size(0), channels,
        bits.size(1), bits.size(2), bits.size(3), pad_h, pad_w, static_cast<T>(low),
        static_cast<T>(pad_value), out.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

constexpr Loops kCudaLoops{&pack_cuda, &xnor_cuda, &unpack_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(binary_loops, kCuda, kCudaLoops);

}  // namespace cvops::binary
