// CPU loops of the local family: gathering a chunk's patches (one task per (location, channel),
// its taps × samples written contiguously) and scattering their gradient (one task per channel,
// locations in order, so every input element sums in a fixed order).
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
    const int64_t plane = t.H * t.W, sample = t.C * plane, kernel = t.kh * t.kw;
    // One task per (location, channel): its kh·kw taps × B samples, written contiguously.
    at::parallel_for(0, (l1 - l0) * t.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t l = l0 + task / t.C, c = task % t.C, i = l / out_w, j = l % out_w;
        scalar_t* dst = out + task * kernel * t.B;
        for (int64_t u = 0; u < t.kh; ++u) {
          const int64_t y = window_input_index(i, u, window.h);
          for (int64_t v = 0; v < t.kw; ++v, dst += t.B) {
            const int64_t xx = window_input_index(j, v, window.w);
            if (y < 0 || y >= t.H || xx < 0 || xx >= t.W) {
              std::fill(dst, dst + t.B, scalar_t(0));
              continue;
            }
            const scalar_t* src = in + c * plane + y * t.W + xx;
            for (int64_t b = 0; b < t.B; ++b) dst[b] = src[b * sample];
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
    const int64_t plane = t.H * t.W, sample = t.C * plane, kernel = t.kh * t.kw;
    // One task per channel, locations and taps in order: a fixed order for every element, and
    // each tap's B gradient values read as one contiguous run.
    at::parallel_for(0, t.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        for (int64_t l = l0; l < l1; ++l) {
          const int64_t i = l / out_w, j = l % out_w;
          const scalar_t* src = gp + ((l - l0) * t.C + c) * kernel * t.B;
          for (int64_t u = 0; u < t.kh; ++u) {
            const int64_t y = window_input_index(i, u, window.h);
            if (y < 0 || y >= t.H) continue;
            for (int64_t v = 0; v < t.kw; ++v) {
              const int64_t xx = window_input_index(j, v, window.w);
              if (xx < 0 || xx >= t.W) continue;
              const scalar_t* s = src + (u * t.kw + v) * t.B;
              scalar_t* d = gx + c * plane + y * t.W + xx;
              for (int64_t b = 0; b < t.B; ++b) d[b * sample] += s[b];
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
