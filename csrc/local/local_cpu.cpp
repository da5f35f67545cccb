// CPU loops of the local family, over x laid out batch-last (BatchLast: [C, Hp, Wp, Bp], padded)
// so that every tap of every location is a contiguous run of samples. Past kStreamBatch samples
// the samples are the vector lanes (local_cpu_bodies.h): forward, one task per location runs its
// filter rows over them with FMAs; backward, the patches' gradient is added onto a batch-last dx
// the same way, row by row of locations in phases that never add to the same element at once,
// and dW is MKL's batched GEMM (at::bmm) over chunks of copied-out patches [n, taps, B]. Up to
// kStreamBatch samples, where the weights are the traffic and vectors of samples would be mostly
// empty, one task per location streams its filter rows once against its patches instead, forward
// and backward, the patch gradients added back one task per channel, locations in order. Every
// element sums in a fixed order, whatever the thread count.
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
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

constexpr int kStreamBatch = 4;  // past 4 samples the batch fills vectors (and MKL's GEMMs)

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

// x [B, C, H, W] as xt [C, Hp, Wp, Bp]: zero-padded, the batch last, Bp = B rounded up to whole
// 64-byte vectors, so that each tap of a location reads (and its gradient adds to) contiguous
// samples. offsets[t]: tap t = (c, u, v) from a window's corner, as F.unfold orders the taps.
struct BatchLast {
  int64_t Hp, Wp, Bp;
  std::vector<int64_t> offsets, corners;  // corners[l]: location l's window corner

  BatchLast(const Problem& p, int64_t element_size)
      : Hp(p.H + 2 * p.window.h.padding),
        Wp(p.W + 2 * p.window.w.padding),
        Bp((p.B * element_size + 63) / 64 * 64 / element_size),
        offsets(p.taps),
        corners(p.locations()) {
    const Window1d &wh = p.window.h, &ww = p.window.w;
    for (int64_t c = 0, t = 0; c < p.C; ++c)
      for (int64_t u = 0; u < wh.kernel; ++u)
        for (int64_t v = 0; v < ww.kernel; ++v, ++t)
          offsets[t] = ((c * Hp + u * wh.dilation) * Wp + v * ww.dilation) * Bp;
    for (int64_t l = 0; l < p.locations(); ++l)
      corners[l] = ((l / p.out_w) * wh.stride * Wp + (l % p.out_w) * ww.stride) * Bp;
  }
  // xt's [B, C, H, W] view of x's values (the padding and the lanes past B left out).
  at::Tensor interior(const at::Tensor& xt, const Problem& p) const {
    return xt.narrow(1, p.window.h.padding, p.H)
        .narrow(2, p.window.w.padding, p.W)
        .narrow(3, 0, p.B)
        .permute({3, 0, 1, 2});
  }
  at::Tensor zeros(const Problem& p, const at::TensorOptions& options) const {
    return at::zeros({p.C, Hp, Wp, Bp}, options);
  }
  at::Tensor of(const at::Tensor& x, const Problem& p) const {
    auto xt = zeros(p, x.options());
    interior(xt, p).copy_(x);
    return xt;
  }
};

// patches [n, taps, B] of the locations l0..l0 + n from xt: one task per (location, channel), its
// kh·kw taps × B samples copied contiguously.
void gather_patches(const at::Tensor& xt, const BatchLast& bl, const Problem& p, int64_t l0,
                    int64_t n, const at::Tensor& patches) {
  const int64_t kernel = p.window.h.kernel * p.window.w.kernel;
  AT_DISPATCH_FLOATING_TYPES(xt.scalar_type(), "cvops_gather_patches_cpu", [&] {
    const scalar_t* in = xt.const_data_ptr<scalar_t>();
    scalar_t* out = patches.data_ptr<scalar_t>();
    at::parallel_for(0, n * p.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t l = l0 + task / p.C, c = task % p.C;
        const scalar_t* corner = in + bl.corners[l];
        for (int64_t t = c * kernel; t < (c + 1) * kernel; ++t) {
          const scalar_t* src = corner + bl.offsets[t];
          std::copy(src, src + p.B, out + (task * kernel + t - c * kernel) * p.B);
        }
      }
    });
  });
}

// grad_xt (batch-last, as xt) += the patches' gradient [n, taps, B] of the locations l0..l0 + n.
// One task per channel, locations and taps in order: a fixed order for every element, each tap's B
// values added as one contiguous run (what lands in the padding is dropped).
void scatter_patches(const at::Tensor& grad_patches, const BatchLast& bl, const Problem& p,
                     int64_t l0, int64_t n, at::Tensor& grad_xt) {
  const int64_t kernel = p.window.h.kernel * p.window.w.kernel;
  AT_DISPATCH_FLOATING_TYPES(grad_xt.scalar_type(), "cvops_scatter_patches_cpu", [&] {
    const scalar_t* gp = grad_patches.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_xt.data_ptr<scalar_t>();
    at::parallel_for(0, p.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        for (int64_t l = l0; l < l0 + n; ++l) {
          scalar_t* corner = gx + bl.corners[l];
          const scalar_t* src = gp + ((l - l0) * p.C + c) * kernel * p.B;
          for (int64_t t = c * kernel; t < (c + 1) * kernel; ++t, src += p.B) {
            scalar_t* dst = corner + bl.offsets[t];
            for (int64_t b = 0; b < p.B; ++b) dst[b] += src[b];
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
                         const Problem& p, const BatchLast& bl, at::Tensor& grad_xt,
                         at::Tensor& grad_w) {
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
      scatter_patches(columns, bl, p, l0, n, grad_xt);
    });
  });
}

// Past kStreamBatch samples: one task per location runs its filter rows over the samples' vectors
// in xt (batch_lanes_forward): no patches gathered, each weight read once per 64 samples.
void batch_lanes_forward_cpu(const at::Tensor& x, const at::Tensor& w, const Problem& p,
                             at::Tensor& out) {
  const BatchLast bl(p, x.element_size());
  const auto xt = bl.of(x, p);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_locally_connected2d_batch_lanes_cpu", [&] {
    using T = scalar_t;
    const auto rows = CVOPS_CPU_SELECT(batch_lanes_forward<T>);
    const T* in = xt.const_data_ptr<T>();
    const T* weight = w.const_data_ptr<T>();
    T* result = out.data_ptr<T>();
    at::parallel_for(0, p.locations(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t l = begin; l < end; ++l) {
        rows(weight + l * p.O * p.taps, p.O, p.taps, in + bl.corners[l], bl.offsets.data(), p.B,
             result + l * p.O * p.B);
      }
    });
  });
}

void forward_cpu(const at::Tensor& x, const at::Tensor& w, const Problem& p, bool /*tf32*/,
                 at::Tensor& out) {
  if (p.B <= kStreamBatch) return stream_forward_cpu(x, w, p, out);
  batch_lanes_forward_cpu(x, w, p, out);
}

// Past kStreamBatch samples, the patches' gradient runs over the samples' vectors too: one task per
// (row of output locations, 64-sample block) adds w_lᵀ·dY_l of the row's locations in order onto
// grad_xt (batch_lanes_patch_gradient), each location's weights read once per block. Rows that
// read common input rows never run at once: rows i ≡ r (mod phases) run in phase r, so every
// element sums its terms in one fixed order, whatever the thread count. dW_l = dY_l·P_lᵀ, reduced
// over the batch, is one batched GEMM per chunk of locations over their copied-out patches.
void batch_lanes_backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                              const Problem& p, const BatchLast& bl, at::Tensor& grad_xt,
                              at::Tensor& grad_w) {
  const auto xt = bl.of(x, p);
  for_each_chunk(p, x.options(), [&](int64_t l0, int64_t n, const at::Tensor& columns) {
    gather_patches(xt, bl, p, l0, n, columns);
    auto block = grad_w.narrow(0, l0, n);
    at::bmm_out(block, grad.narrow(0, l0, n), columns.transpose(1, 2));
  });
  const int64_t L = p.locations();
  auto g = at::zeros({L, p.O, bl.Bp}, grad.options());  // [L, O, Bp]: whole vectors of samples
  g.narrow(2, 0, p.B).copy_(grad);
  // Rows i and i + phases read disjoint input rows: (phases − 1)·stride ≥ span − stride.
  const Window1d& wh = p.window.h;
  const int64_t span = wh.dilation * (wh.kernel - 1) + 1;
  const int64_t phases = std::min(p.out_h, std::max<int64_t>(1, (span - 1) / wh.stride + 1));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_locally_connected2d_patch_gradient_cpu", [&] {
    using T = scalar_t;
    const auto rows = CVOPS_CPU_SELECT(batch_lanes_patch_gradient<T>);
    const int64_t block = 256 / sizeof(T), blocks = (bl.Bp + block - 1) / block;
    const T* weight = w.const_data_ptr<T>();
    const T* gl = g.const_data_ptr<T>();
    T* gx = grad_xt.data_ptr<T>();
    for (int64_t phase = 0; phase < phases; ++phase) {
      const int64_t count =
          (p.out_h - phase + phases - 1) / phases;  // rows phase, phase + phases..
      at::parallel_for(0, count * blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t i = phase + task / blocks * phases, b0 = task % blocks * block;
          rows(weight, gl, i * p.out_w, p.out_w, p.O, p.taps, bl.Bp, b0,
               std::min(bl.Bp, b0 + block), bl.corners.data(), bl.offsets.data(), gx);
        }
      });
    }
  });
}

void backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w,
                  const Problem& p, at::Tensor& grad_x, at::Tensor& grad_w) {
  const BatchLast bl(p, x.element_size());
  auto grad_xt = bl.zeros(p, x.options());
  if (p.B <= kStreamBatch) {
    stream_backward_cpu(grad, x, w, p, bl, grad_xt, grad_w);
  } else {
    batch_lanes_backward_cpu(grad, x, w, p, bl, grad_xt, grad_w);
  }
  grad_x.copy_(bl.interior(grad_xt, p));
}

constexpr Loops kCpuLoops{&forward_cpu, &backward_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(local_loops, kCpu, kCpuLoops);

}  // namespace cvops::local
