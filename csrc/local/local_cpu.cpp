// CPU loops of the local family: gathering a chunk's patches (one task per (location, sample) row,
// written contiguously along the patch) and scattering their gradient (one task per (sample,
// channel) plane, locations in order, so every input element sums in a fixed order).
#include <ATen/Parallel.h>

#include <algorithm>

#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/window.h"
#include "local/local.h"

namespace cvops::local {
namespace {

struct Taps {
  int64_t B, C, H, W, kh, kw;
};

Taps taps_of(const at::Tensor& t, const Window2d& window) {
  return {t.size(0), t.size(1), t.size(2), t.size(3), window.h.kernel, window.w.kernel};
}

void gather_patches_cpu(const at::Tensor& x, const Window2d& window, int64_t out_w, int64_t l0,
                        int64_t l1, at::Tensor& patches) {
  const Taps t = taps_of(x, window);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cvops_gather_patches_cpu", [&] {
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = patches.data_ptr<scalar_t>();
    const int64_t row = t.C * t.kh * t.kw;
    const bool dense = window.w.dilation == 1;
    at::parallel_for(0, (l1 - l0) * t.B, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t l = l0 + r / t.B, b = r % t.B, i = l / out_w, j = l % out_w;
        const int64_t x0 = window_input_index(j, 0, window.w);
        scalar_t* dst = out + r * row;
        for (int64_t c = 0; c < t.C; ++c) {
          const scalar_t* plane = in + (b * t.C + c) * t.H * t.W;
          for (int64_t u = 0; u < t.kh; ++u, dst += t.kw) {
            const int64_t y = window_input_index(i, u, window.h);
            if (y < 0 || y >= t.H) {
              std::fill(dst, dst + t.kw, scalar_t(0));
              continue;
            }
            const scalar_t* src = plane + y * t.W;
            if (dense && x0 >= 0 && x0 + t.kw <= t.W) {  // the common case: one run of kw values
              std::copy(src + x0, src + x0 + t.kw, dst);
              continue;
            }
            for (int64_t v = 0; v < t.kw; ++v) {
              const int64_t xx = window_input_index(j, v, window.w);
              dst[v] = xx >= 0 && xx < t.W ? src[xx] : scalar_t(0);
            }
          }
        }
      }
    });
  });
}

void scatter_patches_cpu(const at::Tensor& grad_patches, const Window2d& window, int64_t out_w,
                         int64_t l0, int64_t l1, at::Tensor& grad_x) {
  const Taps t = taps_of(grad_x, window);
  AT_DISPATCH_FLOATING_TYPES(grad_x.scalar_type(), "cvops_scatter_patches_cpu", [&] {
    const scalar_t* gp = grad_patches.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    const int64_t row = t.C * t.kh * t.kw;
    const bool dense = window.w.dilation == 1;
    at::parallel_for(0, t.B * t.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t b = plane / t.C, c = plane % t.C;
        scalar_t* dst = gx + plane * t.H * t.W;
        for (int64_t l = l0; l < l1; ++l) {
          const int64_t i = l / out_w, j = l % out_w;
          const scalar_t* src = gp + ((l - l0) * t.B + b) * row + c * t.kh * t.kw;
          const int64_t x0 = window_input_index(j, 0, window.w);
          const bool run = dense && x0 >= 0 && x0 + t.kw <= t.W;
          for (int64_t u = 0; u < t.kh; ++u) {
            const int64_t y = window_input_index(i, u, window.h);
            if (y < 0 || y >= t.H) continue;
            scalar_t* out_row = dst + y * t.W;
            const scalar_t* in_row = src + u * t.kw;
            if (run) {
              for (int64_t v = 0; v < t.kw; ++v) out_row[x0 + v] += in_row[v];
              continue;
            }
            for (int64_t v = 0; v < t.kw; ++v) {
              const int64_t xx = window_input_index(j, v, window.w);
              if (xx >= 0 && xx < t.W) out_row[xx] += in_row[v];
            }
          }
        }
      }
    });
  });
}

constexpr Loops kCpuLoops{&gather_patches_cpu, &scatter_patches_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(local_loops, kCpu, kCpuLoops);

}  // namespace cvops::local
