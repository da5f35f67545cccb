// CUDA loops of the local family: fused per-location implicit GEMMs whose input patches are
// gathered into shared memory, never into global memory.
//  - Forward, batches up to 8: weight streaming. One block per (location, 8 output channels)
//    gathers a chunk of the location's patches [taps, B] into shared memory; each warp streams one
//    filter row (coalesced, every weight read once) against all samples, a shuffle tree summing
//    the lanes.
//  - Forward, larger batches: each warp owns one location × 16 output channels × 32·R samples and,
//    per chunk of 32 taps (one per lane), stages the weights [32, 16] and patches [32·R, 32] in
//    shared memory, then runs FFMA register tiles on them, or TF32 tensor-core mma (wmma
//    m16n16k8, sm_80+) where the op body allows TF32.
//  - dW: one block per (location, 16 output channels, 128 taps), one tap per thread against the
//    location's gradient [B, 16] in shared memory, the batch summed in order.
//  - dx in gather form: one warp per input column (y, x) × 16 channels walks the taps that read it,
//    lanes over the samples, the weights transposed once to [L, kh, kw, O, C] so that they are
//    read once per tile of samples.
// Deterministic: every sum runs in a fixed order, no float atomics.
#include <ATen/cuda/CUDAContext.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "common/checks.h"
#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/window.h"
#include "local/local.h"

namespace cvops::local {
namespace {

constexpr int kThreads = 256;
constexpr int kInputWarps = 8;  // dx: input columns per block, one per warp
constexpr int kGradChannels = 16;  // dx: input channels per warp

// Where tap t = (c, u, v) of location l reads x [B, C, H, W] within one sample, or -1 where it
// reads padding.
__device__ __forceinline__ int64_t patch_offset(const Problem& p, int64_t l, int64_t t) {
  const int64_t kh = p.window.h.kernel, kw = p.window.w.kernel;
  const int64_t v = t % kw, u = (t / kw) % kh, c = t / (kw * kh);
  const int64_t y = window_input_index(l / p.out_w, u, p.window.h);
  const int64_t x = window_input_index(l % p.out_w, v, p.window.w);
  return y >= 0 && y < p.H && x >= 0 && x < p.W ? (c * p.H + y) * p.W + x : -1;
}

// ---- forward, weight streaming ---------------------------------------------------------------

constexpr int kStreamWarps = 8;  // output channels per block, one per warp
constexpr int kStreamThreads = kStreamWarps * kWarpSize;
constexpr int kStreamTaps = kStreamThreads;  // taps per staged chunk, one per thread
constexpr int64_t kMaxStreamBatch = 8;

template <typename T, int kSamples>
__global__ void __launch_bounds__(kStreamThreads)
    forward_stream_kernel(const T* __restrict__ x, const T* __restrict__ w, Problem p,
                          T* __restrict__ out) {
  __shared__ T patches[kStreamTaps][kSamples];
  const int64_t l = blockIdx.x;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t o = int64_t(blockIdx.y) * kStreamWarps + warp;
  const int64_t sample = p.C * p.H * p.W;
  // A warp past the last channel streams the last row too (its sums are dropped), so that every
  // thread reaches the block's barriers.
  const T* row = w + (l * p.O + min(o, p.O - 1)) * p.taps;
  T acc[kSamples] = {};
  for (int64_t t0 = 0; t0 < p.taps; t0 += kStreamTaps) {
    const int64_t t = t0 + threadIdx.x;
    const int64_t offset = t < p.taps ? patch_offset(p, l, t) : -1;
    __syncthreads();
#pragma unroll
    for (int b = 0; b < kSamples; ++b) {
      patches[threadIdx.x][b] = offset >= 0 && b < p.B ? x[b * sample + offset] : T(0);
    }
    __syncthreads();
    const int64_t n = min(int64_t(kStreamTaps), p.taps - t0);
#pragma unroll
    for (int k = lane; k < kStreamTaps; k += kWarpSize) {
      if (k < n) {
        const T weight = row[t0 + k];
#pragma unroll
        for (int b = 0; b < kSamples; ++b) acc[b] += weight * patches[k][b];
      }
    }
  }
#pragma unroll
  for (int b = 0; b < kSamples; ++b) acc[b] = warp_reduce(acc[b]);
  if (lane == 0 && o < p.O) {
    for (int b = 0; b < kSamples && b < p.B; ++b) out[(l * p.O + o) * p.B + b] = acc[b];
  }
}

// ---- forward, tiles --------------------------------------------------------------------------

constexpr int kTileWarps = 2;  // independent warps per block, one location each
constexpr int kTileTaps = kWarpSize;
constexpr int kTileOut = 16;  // output channels per warp: the mma's M

// The staged chunk of one warp: weights [k][o] (the mma's A, column-major) and patches [b][k]
// (its B, column-major). Lane k stores tap k, so the patches' rows are one word longer than the
// chunk (no bank conflicts), four for wmma (whose loads take rows of a multiple of 4 values); the
// weights' rows of 20 keep their stores to 4-way conflicts and their 16-byte broadcast reads.
template <typename T, int kSamples, bool kTensorCores>
struct TileShared {
  static constexpr int kLdW = kTileOut + 4, kLdP = kTileTaps + (kTensorCores ? 4 : 1);
  T w[kTileTaps][kLdW];
  T patches[kSamples][kLdP];
};

// FFMA register tile: lane owns samples lane + 32·r, every output channel; taps summed in order.
template <typename T, int kSamples>
struct FfmaTile {
  static constexpr int kR = kSamples / kWarpSize;
  T acc[kR][kTileOut] = {};

  __device__ void step(const TileShared<T, kSamples, false>& s, int lane) {
#pragma unroll 4
    for (int k = 0; k < kTileTaps; ++k) {
      T weight[kTileOut];
#pragma unroll
      for (int o = 0; o < kTileOut; ++o) weight[o] = s.w[k][o];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const T value = s.patches[lane + kWarpSize * r][k];
#pragma unroll
        for (int o = 0; o < kTileOut; ++o) acc[r][o] += weight[o] * value;
      }
    }
  }

  // out: output channel o0 of the warp's location and sample b0 in [L, O, B]; stride = B.
  __device__ void store(TileShared<T, kSamples, false>&, int lane, T* out, int64_t stride, int outs,
                        int64_t samples) {
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int b = lane + kWarpSize * r;
      if (b >= samples) continue;
#pragma unroll
      for (int o = 0; o < kTileOut; ++o) {
        if (o < outs) out[o * stride + b] = acc[r][o];
      }
    }
  }
};

// TF32 tensor-core tile: kSamples / 16 accumulator fragments of 16 channels × 16 samples.
template <int kSamples>
struct Tf32Tile {
  static constexpr int kN = kSamples / 16;
  using Shared = TileShared<float, kSamples, true>;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> acc[kN];

  __device__ Tf32Tile() {
#pragma unroll
    for (int n = 0; n < kN; ++n) nvcuda::wmma::fill_fragment(acc[n], 0.0f);
  }

  __device__ void step(const Shared& s, int) {
#if __CUDA_ARCH__ >= 800
    using namespace nvcuda;
#pragma unroll
    for (int k0 = 0; k0 < kTileTaps; k0 += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> a;
      wmma::load_matrix_sync(a, &s.w[k0][0], Shared::kLdW);
#pragma unroll
      for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> b;
        wmma::load_matrix_sync(b, &s.patches[16 * n][k0], Shared::kLdP);
#pragma unroll
        for (int i = 0; i < b.num_elements; ++i) b.x[i] = wmma::__float_to_tf32(b.x[i]);
        wmma::mma_sync(acc[n], a, b, acc[n]);
      }
    }
#else
    __trap();  // the host runs this tile only where it was compiled for sm_80+ (compiled_for)
#endif
  }

  // Through the warp's patch buffer, as [o][b] rows of kSamples + 4, so that the global stores
  // coalesce (16·(kSamples + 4) values fit in its kSamples·(32 + 4)).
  __device__ void store(Shared& s, int lane, float* out, int64_t stride, int outs,
                        int64_t samples) {
    constexpr int kLd = kSamples + 4;
    float* stage = &s.patches[0][0];
    __syncwarp();
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      nvcuda::wmma::store_matrix_sync(stage + 16 * n, acc[n], kLd, nvcuda::wmma::mem_row_major);
    }
    __syncwarp();
    for (int o = 0; o < outs; ++o) {
      for (int b = lane; b < samples; b += kWarpSize) out[o * stride + b] = stage[o * kLd + b];
    }
  }
};

template <typename T, int kSamples, bool kTensorCores>
__global__ void __launch_bounds__(kTileWarps* kWarpSize)
    forward_tile_kernel(const T* __restrict__ x, const T* __restrict__ w, Problem p,
                        T* __restrict__ out) {
  using Shared = TileShared<T, kSamples, kTensorCores>;
  using Tile = std::conditional_t<kTensorCores, Tf32Tile<kSamples>, FfmaTile<T, kSamples>>;
  __shared__ __align__(32) Shared shared[kTileWarps];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t l = int64_t(blockIdx.x) * kTileWarps + warp;
  if (l >= p.locations()) return;  // the warps share no barrier
  Shared& s = shared[warp];
  const int64_t o0 = int64_t(blockIdx.y) * kTileOut, b0 = int64_t(blockIdx.z) * kSamples;
  const int outs = static_cast<int>(min(int64_t(kTileOut), p.O - o0));
  const int64_t samples = min(int64_t(kSamples), p.B - b0), sample = p.C * p.H * p.W;
  const T* xb = x + b0 * sample;
  const T* wl = w + (l * p.O + o0) * p.taps;
  Tile tile;
  for (int64_t t0 = 0; t0 < p.taps; t0 += kTileTaps) {
    const int64_t t = t0 + lane;  // zero weights and patches past the last tap
    const bool real = t < p.taps;
    const int64_t offset = real ? patch_offset(p, l, t) : -1;
    __syncwarp();
#pragma unroll
    for (int o = 0; o < kTileOut; ++o) s.w[lane][o] = real && o < outs ? wl[o * p.taps + t] : T(0);
#pragma unroll 8
    for (int b = 0; b < kSamples; ++b) {
      s.patches[b][lane] = offset >= 0 && b < samples ? xb[b * sample + offset] : T(0);
    }
    __syncwarp();
    tile.step(s, lane);
  }
  tile.store(s, lane, out + (l * p.O + o0) * p.B + b0, p.B, outs, samples);
}

template <typename T, int kSamples, bool kTensorCores>
void launch_tile(const at::Tensor& x, const at::Tensor& w, const Problem& p, at::Tensor& out,
                 cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(p.locations(), kTileWarps)),
                  static_cast<unsigned>(ceil_div<int64_t>(p.O, kTileOut)),
                  static_cast<unsigned>(ceil_div<int64_t>(p.B, kSamples)));
  forward_tile_kernel<T, kSamples, kTensorCores><<<grid, kTileWarps * kWarpSize, 0, stream>>>(
      x.const_data_ptr<T>(), w.const_data_ptr<T>(), p, out.data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int kSamples>
void launch_stream(const at::Tensor& x, const at::Tensor& w, const Problem& p, at::Tensor& out,
                   cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.locations()),
                  static_cast<unsigned>(ceil_div<int64_t>(p.O, kStreamWarps)));
  forward_stream_kernel<T, kSamples><<<grid, kStreamThreads, 0, stream>>>(
      x.const_data_ptr<T>(), w.const_data_ptr<T>(), p, out.data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Grid limits of the kernels (x up to 2^31 − 1 blocks, y and z up to kMaxGridYZ).
void check_grid(const char* op, const Problem& p) {
  CVOPS_CHECK(p.locations() <= int64_t(INT32_MAX) && p.H * p.W <= int64_t(INT32_MAX) &&
                  p.O <= kMaxGridYZ * kStreamWarps && p.C <= kMaxGridYZ * kGradChannels &&
                  p.B <= kMaxGridYZ * kWarpSize && p.taps <= kMaxGridYZ * kThreads,
              op, "the CUDA kernels take at most 2^31 - 1 locations and input pixels, ",
              kMaxGridYZ * kStreamWarps, " output channels, ", kMaxGridYZ * kGradChannels,
              " input channels, ", kMaxGridYZ * kWarpSize, " samples and ", kMaxGridYZ * kThreads,
              " taps per location, got ", p.locations(), ", ", p.H * p.W, ", ", p.O, ", ", p.C,
              ", ", p.B, " and ", p.taps);
}

void forward_cuda(const at::Tensor& x, const at::Tensor& w, const Problem& p, bool tf32,
                  at::Tensor& out) {
  check_grid("locally_connected2d", p);
  c10::cuda::CUDAGuard guard(x.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const bool tensor_cores = tf32 && compiled_for(forward_tile_kernel<float, 32, true>, 80);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_locally_connected2d_cuda", [&] {
    using T = scalar_t;
    if (p.B <= kMaxStreamBatch) {
      if (p.B == 1) return launch_stream<T, 1>(x, w, p, out, stream);
      if (p.B == 2) return launch_stream<T, 2>(x, w, p, out, stream);
      if (p.B <= 4) return launch_stream<T, 4>(x, w, p, out, stream);
      return launch_stream<T, 8>(x, w, p, out, stream);
    }
    if constexpr (std::is_same_v<T, float>) {
      if (tensor_cores) {
        if (p.B <= 32) return launch_tile<T, 32, true>(x, w, p, out, stream);
        if (p.B <= 64) return launch_tile<T, 64, true>(x, w, p, out, stream);
        return launch_tile<T, 128, true>(x, w, p, out, stream);
      }
      if (p.B <= 32) return launch_tile<T, 32, false>(x, w, p, out, stream);
      if (p.B <= 64) return launch_tile<T, 64, false>(x, w, p, out, stream);
      return launch_tile<T, 128, false>(x, w, p, out, stream);
    } else {  // float64 tiles of up to 64 samples fit the 48 KB of static shared memory
      if (p.B <= 32) return launch_tile<T, 32, false>(x, w, p, out, stream);
      return launch_tile<T, 64, false>(x, w, p, out, stream);
    }
  });
}

// ---- backward ----------------------------------------------------------------------------------

constexpr int kGradSamples = 64;  // samples of the gradient staged per step

// grad_w[l, o0 + o, t] = Σ_b grad[l, o0 + o, b] · patch(l, t, b), b in order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    weight_grad_kernel(const T* __restrict__ grad, const T* __restrict__ x, Problem p,
                       T* __restrict__ grad_w) {
  __shared__ T grad_s[kGradSamples][kTileOut];
  const int64_t l = blockIdx.x, o0 = int64_t(blockIdx.y) * kTileOut;
  const int64_t t = int64_t(blockIdx.z) * kThreads + threadIdx.x;
  const int outs = static_cast<int>(min(int64_t(kTileOut), p.O - o0));
  const int64_t offset = t < p.taps ? patch_offset(p, l, t) : -1, sample = p.C * p.H * p.W;
  const T* gl = grad + (l * p.O + o0) * p.B;
  T acc[kTileOut] = {};
  for (int64_t b0 = 0; b0 < p.B; b0 += kGradSamples) {
    __syncthreads();
    for (int e = threadIdx.x; e < kGradSamples * kTileOut; e += kThreads) {
      const int o = e / kGradSamples, b = e % kGradSamples;  // coalesced along the batch
      grad_s[b][o] = o < outs && b0 + b < p.B ? gl[o * p.B + b0 + b] : T(0);
    }
    __syncthreads();
    if (offset < 0) continue;
    const int n = static_cast<int>(min(int64_t(kGradSamples), p.B - b0));
    const T* xt = x + b0 * sample + offset;
#pragma unroll 4
    for (int b = 0; b < n; ++b) {
      const T value = xt[b * sample];
#pragma unroll
      for (int o = 0; o < kTileOut; ++o) acc[o] += grad_s[b][o] * value;
    }
  }
  if (t >= p.taps) return;
#pragma unroll
  for (int o = 0; o < kTileOut; ++o) {
    if (o < outs) grad_w[(l * p.O + o0 + o) * p.taps + t] = acc[o];
  }
}

// grad_x[b, c0 + c, y, x] = Σ over the taps (u, v) that read (y, x), at location l, of
// Σ_o w_t[l, u, v, o, c0 + c] · grad[l, o, b]: the weights [L, kh, kw, O, C] read once per tile of
// samples, lane-uniform; lanes own samples b0 + lane + 32·r; taps and channels summed in order.
template <typename T, int kR>
__global__ void __launch_bounds__(kInputWarps* kWarpSize)
    input_grad_kernel(const T* __restrict__ grad, const T* __restrict__ w_t, Problem p,
                      T* __restrict__ grad_x) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t columns = ceil_div<int64_t>(p.W, kInputWarps);
  const int64_t y = blockIdx.x / columns, x = (blockIdx.x % columns) * kInputWarps + warp;
  if (x >= p.W) return;
  const int64_t c0 = int64_t(blockIdx.y) * kGradChannels;
  const int64_t b0 = int64_t(blockIdx.z) * kR * kWarpSize + lane;
  const int channels = static_cast<int>(min(int64_t(kGradChannels), p.C - c0));
  const Window1d &wh = p.window.h, &ww = p.window.w;
  T acc[kR][kGradChannels] = {};
  for (int64_t u = 0; u < wh.kernel; ++u) {
    const int64_t oy = y + wh.padding - u * wh.dilation;  // i · stride
    if (oy < 0 || oy % wh.stride != 0 || oy / wh.stride >= p.out_h) continue;
    for (int64_t v = 0; v < ww.kernel; ++v) {
      const int64_t ox = x + ww.padding - v * ww.dilation;
      if (ox < 0 || ox % ww.stride != 0 || ox / ww.stride >= p.out_w) continue;
      const int64_t l = (oy / wh.stride) * p.out_w + ox / ww.stride;
      const T* gl = grad + l * p.O * p.B + b0;
      const T* wl = w_t + ((l * wh.kernel + u) * ww.kernel + v) * p.O * p.C + c0;
      for (int64_t o = 0; o < p.O; ++o) {
        T g[kR];
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          g[r] = b0 + kWarpSize * r < p.B ? gl[o * p.B + kWarpSize * r] : T(0);
        }
#pragma unroll
        for (int c = 0; c < kGradChannels; ++c) {
          const T weight = c < channels ? wl[o * p.C + c] : T(0);
#pragma unroll
          for (int r = 0; r < kR; ++r) acc[r][c] += weight * g[r];
        }
      }
    }
  }
  const int64_t plane = p.H * p.W;
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int64_t b = b0 + kWarpSize * r;
    if (b >= p.B) continue;
    T* gx = grad_x + (b * p.C + c0) * plane + y * p.W + x;
#pragma unroll
    for (int c = 0; c < kGradChannels; ++c) {
      if (c < channels) gx[c * plane] = acc[r][c];
    }
  }
}

template <typename T, int kR>
void launch_input_grad(const at::Tensor& grad, const at::Tensor& w_t, const Problem& p,
                       at::Tensor& grad_x, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.H * ceil_div<int64_t>(p.W, kInputWarps)),
                  static_cast<unsigned>(ceil_div<int64_t>(p.C, kGradChannels)),
                  static_cast<unsigned>(ceil_div<int64_t>(p.B, kR * kWarpSize)));
  input_grad_kernel<T, kR><<<grid, kInputWarps * kWarpSize, 0, stream>>>(
      grad.const_data_ptr<T>(), w_t.const_data_ptr<T>(), p, grad_x.data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void backward_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                   const Problem& p, at::Tensor& grad_x, at::Tensor& grad_w) {
  check_grid("locally_connected2d_backward", p);
  c10::cuda::CUDAGuard guard(x.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  // [L, kh, kw, O, C]: the weights one input element's taps read, channels contiguous.
  const auto w_t = w.view({p.locations(), p.O, p.C, p.window.h.kernel, p.window.w.kernel})
                       .permute({0, 3, 4, 1, 2})
                       .contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_locally_connected2d_backward_cuda", [&] {
    using T = scalar_t;
    const dim3 grid(static_cast<unsigned>(p.locations()),
                    static_cast<unsigned>(ceil_div<int64_t>(p.O, kTileOut)),
                    static_cast<unsigned>(ceil_div<int64_t>(p.taps, kThreads)));
    weight_grad_kernel<T><<<grid, kThreads, 0, stream>>>(
        grad.const_data_ptr<T>(), x.const_data_ptr<T>(), p, grad_w.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (p.B <= kWarpSize) return launch_input_grad<T, 1>(grad, w_t, p, grad_x, stream);
    if (p.B <= 2 * kWarpSize) return launch_input_grad<T, 2>(grad, w_t, p, grad_x, stream);
    launch_input_grad<T, 4>(grad, w_t, p, grad_x, stream);
  });
}

constexpr Loops kCudaLoops{&forward_cuda, &backward_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(local_loops, kCuda, kCudaLoops);

}  // namespace cvops::local
