// CPU loops of the local family: chunks of locations whose patches are gathered ([n, taps, B], one
// task per (location, channel), its taps × samples written contiguously), multiplied by MKL's
// batched GEMM (at::bmm) and, for dx, scattered back (one task per channel, locations in order, so
// every input element sums in a fixed order). Up to kStreamBatch samples, where the weights are the
// traffic and MKL's tiny GEMMs are overhead, one task per location streams its filter rows once
// against its patches instead (local_cpu_bodies.h), forward and backward.
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/cpu_levels.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/window.h"
#include "local/local.h"

namespace cvops::local {
namespace {

constexpr int kStreamBatch = 4;  // past 4 samples MKL's batched GEMMs are as fast

#define CVOPS_CPU_BODIES "local/local_cpu_bodies.h"
#include "common/cpu_levels_compile.h"

// fn(l0, n, columns) for the chunks of n locations from l0, columns being the chunk's [n, taps, B]
// view of one buffer: about 8 MB of float32, so a chunk's patches stay in the last-level cache
// next to its weights.
template <typename Fn>
void for_each_chunk(const Problem& p, const at::TensorOptions& options, Fn&& fn) {
  constexpr int64_t kChunkValues = int64_t(1) << 21;
  const int64_t L = p.locations();
  const int64_t chunk =
      std::clamp<int64_t>(kChunkValues / std::max<int64_t>(1, p.B * p.taps), 1, L);
  auto buffer = at::empty({chunk, p.taps, p.B}, options);
  for (int64_t l0 = 0; l0 < L; l0 += chunk) {
    const int64_t n = std::min(L - l0, chunk);
    fn(l0, n, buffer.narrow(0, 0, n));
  }
}

// patches [n, taps, B] of the locations l0..l0 + n, 0 where a tap reads padding.
void gather_patches(const at::Tensor& x, const Problem& p, int64_t l0, int64_t n,
                    const at::Tensor& patches) {
  const Window1d &wh = p.window.h, &ww = p.window.w;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_gather_patches_cpu", [&] {
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = patches.data_ptr<scalar_t>();
    const int64_t plane = p.H * p.W, sample = p.C * plane, kernel = wh.kernel * ww.kernel;
    // One task per (location, channel): its kh·kw taps × B samples, written contiguously.
    at::parallel_for(0, n * p.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t l = l0 + task / p.C, c = task % p.C, i = l / p.out_w, j = l % p.out_w;
        scalar_t* dst = out + task * kernel * p.B;
        for (int64_t u = 0; u < wh.kernel; ++u) {
          const int64_t y = window_input_index(i, u, wh);
          for (int64_t v = 0; v < ww.kernel; ++v, dst += p.B) {
            const int64_t xx = window_input_index(j, v, ww);
            if (y < 0 || y >= p.H || xx < 0 || xx >= p.W) {
              std::fill(dst, dst + p.B, scalar_t(0));
              continue;
            }
            const scalar_t* src = in + c * plane + y * p.W + xx;
            for (int64_t b = 0; b < p.B; ++b) dst[b] = src[b * sample];
          }
        }
      }
    });
  });
}

// grad_x += the patches' gradient [n, taps, B] of the locations l0..l0 + n, summed back onto the
// input.
void scatter_patches(const at::Tensor& grad_patches, const Problem& p, int64_t l0, int64_t n,
                     at::Tensor& grad_x) {
  const Window1d &wh = p.window.h, &ww = p.window.w;
  AT_DISPATCH_FLOATING_TYPES(grad_x.scalar_type(), "cvops_scatter_patches_cpu", [&] {
    const scalar_t* gp = grad_patches.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    const int64_t plane = p.H * p.W, sample = p.C * plane, kernel = wh.kernel * ww.kernel;
    // One task per channel, locations and taps in order: a fixed order for every element, and
    // each tap's B gradient values read as one contiguous run.
    at::parallel_for(0, p.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        for (int64_t l = l0; l < l0 + n; ++l) {
          const int64_t i = l / p.out_w, j = l % p.out_w;
          const scalar_t* src = gp + ((l - l0) * p.C + c) * kernel * p.B;
          for (int64_t u = 0; u < wh.kernel; ++u) {
            const int64_t y = window_input_index(i, u, wh);
            if (y < 0 || y >= p.H) continue;
            for (int64_t v = 0; v < ww.kernel; ++v) {
              const int64_t xx = window_input_index(j, v, ww);
              if (xx < 0 || xx >= p.W) continue;
              const scalar_t* s = src + (u * ww.kernel + v) * p.B;
              scalar_t* d = gx + c * plane + y * p.W + xx;
              for (int64_t b = 0; b < p.B; ++b) d[b * sample] += s[b];
            }
          }
        }
      }
    });
  });
}

// Location l's patches as rows [B, taps] (each sample's taps contiguous), 0 where a tap reads
// padding: a kernel row inside the image at dilation 1 is one copy of kw values.
template <typename T>
void gather_location(const T* x, const Problem& p, int64_t l, T* patches) {
  const Window1d &wh = p.window.h, &ww = p.window.w;
  const int64_t plane = p.H * p.W, i = l / p.out_w, j = l % p.out_w;
  const int64_t x0 = window_input_index(j, 0, ww);
  const bool row_inside = ww.dilation == 1 && x0 >= 0 && x0 + ww.kernel <= p.W;
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t c = 0; c < p.C; ++c) {
      const T* channel = x + (b * p.C + c) * plane;
      for (int64_t u = 0; u < wh.kernel; ++u, patches += ww.kernel) {
        const int64_t y = window_input_index(i, u, wh);
        if (y < 0 || y >= p.H) {
          std::fill(patches, patches + ww.kernel, T(0));
        } else if (row_inside) {
          std::copy(channel + y * p.W + x0, channel + y * p.W + x0 + ww.kernel, patches);
        } else {
          for (int64_t v = 0; v < ww.kernel; ++v) {
            const int64_t xx = window_input_index(j, v, ww);
            patches[v] = xx >= 0 && xx < p.W ? channel[y * p.W + xx] : T(0);
          }
        }
      }
    }
  }
}

void stream_forward_cpu(const at::Tensor& x, const at::Tensor& w, const Problem& p,
                        at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_locally_connected2d_stream_cpu", [&] {
    using T = scalar_t;
    const auto rows = CVOPS_CPU_SELECT(stream_forward<T>);
    const T* in = x.const_data_ptr<T>();
    const T* weight = w.const_data_ptr<T>();
    T* result = out.data_ptr<T>();
    at::parallel_for(0, p.locations(), 8, [&](int64_t begin, int64_t end) {
      std::vector<T> patches(p.B * p.taps);
      for (int64_t l = begin; l < end; ++l) {
        gather_location(in, p, l, patches.data());
        rows(weight + l * p.O * p.taps, patches.data(), p.O, p.B, p.taps, result + l * p.O * p.B);
      }
    });
  });
}

// Per chunk of locations: each location's dW and patch gradient in one pass over its weights,
// then the chunk's patch gradients scattered back in order.
void stream_backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                         const Problem& p, at::Tensor& grad_x, at::Tensor& grad_w) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_locally_connected2d_stream_backward_cpu", [&] {
    using T = scalar_t;
    const auto rows = CVOPS_CPU_SELECT(stream_backward<T>);
    const T* in = x.const_data_ptr<T>();
    const T* weight = w.const_data_ptr<T>();
    const T* g = grad.const_data_ptr<T>();
    T* gw = grad_w.data_ptr<T>();
    for_each_chunk(p, x.options(), [&](int64_t l0, int64_t n, const at::Tensor& columns) {
      T* chunk = columns.data_ptr<T>();  // [n, taps, B], as scatter_patches reads them
      at::parallel_for(l0, l0 + n, 8, [&](int64_t begin, int64_t end) {
        std::vector<T> patches(p.B * p.taps), grad_patches(p.B * p.taps);
        for (int64_t l = begin; l < end; ++l) {
          gather_location(in, p, l, patches.data());
          std::fill(grad_patches.begin(), grad_patches.end(), T(0));
          rows(weight + l * p.O * p.taps, patches.data(), g + l * p.O * p.B, p.O, p.B, p.taps,
               gw + l * p.O * p.taps, grad_patches.data());
          T* dst = chunk + (l - l0) * p.taps * p.B;
          for (int64_t t = 0; t < p.taps; ++t) {
            for (int64_t b = 0; b < p.B; ++b) dst[t * p.B + b] = grad_patches[b * p.taps + t];
          }
        }
      });
      scatter_patches(columns, p, l0, n, grad_x);
    });
  });
}

void forward_cpu(const at::Tensor& x, const at::Tensor& w, const Problem& p, bool /*tf32*/,
                 at::Tensor& out) {
  if (p.B <= kStreamBatch) return stream_forward_cpu(x, w, p, out);
  for_each_chunk(p, x.options(), [&](int64_t l0, int64_t n, const at::Tensor& columns) {
    gather_patches(x, p, l0, n, columns);
    auto block = out.narrow(0, l0, n);  // [n, O, B] = [n, O, taps] · [n, taps, B]
    at::bmm_out(block, w.narrow(0, l0, n), columns);
  });
}

void backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                  const Problem& p, at::Tensor& grad_x, at::Tensor& grad_w) {
  if (p.B <= kStreamBatch) return stream_backward_cpu(grad, x, w, p, grad_x, grad_w);
  for_each_chunk(p, x.options(), [&](int64_t l0, int64_t n, const at::Tensor& columns) {
    gather_patches(x, p, l0, n, columns);
    const auto gl = grad.narrow(0, l0, n);  // [n, O, B]
    // dW_l = dY_l·P_lᵀ, reduced over the batch by the GEMM; dP_l = W_lᵀ·dY_l, scattered back.
    auto block = grad_w.narrow(0, l0, n);
    at::bmm_out(block, gl, columns.transpose(1, 2));
    scatter_patches(at::bmm(w.narrow(0, l0, n).transpose(1, 2), gl), p, l0, n, grad_x);
  });
}

constexpr Loops kCpuLoops{&forward_cpu, &backward_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(local_loops, kCpu, kCpuLoops);

}  // namespace cvops::local
