// CPU loops of the xcorr family: a direct correlation, no im2col. Outputs are computed in tiles of
// up to 4 rows × 2 vectors held in registers across every template tap and channel of a block
// (xcorr_cpu_bodies.h, at the CPU level chosen at load); full mode sums fixed blocks of channels
// into partial planes, then the blocks in order, so the bits do not depend on the thread count.
// The backward reuses the tiles: dx is the correlation of the padded gradient by the flipped
// template; dz sums each tap over the output plane and the batch in a fixed order.
#include <ATen/Parallel.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/flip.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/cpu_levels.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "xcorr/xcorr.h"

namespace cvops::xcorr {
namespace {

#define CVOPS_CPU_BODIES "xcorr/xcorr_cpu_bodies.h"
#include "common/cpu_levels_compile.h"

constexpr int64_t kChannelBlock = 16;  // full mode: channels per task (fixed: not thread-dependent)

struct Planes {
  int64_t B, C, Bz, Hp, Wp, h, w, Ho, Wo;
  int64_t template_of(int64_t b) const { return Bz == 1 ? 0 : b; }
};

Planes planes_of(const at::Tensor& xp, const at::Tensor& z) {
  const int64_t Hp = xp.size(2), Wp = xp.size(3), h = z.size(2), w = z.size(3);
  return {xp.size(0), xp.size(1), z.size(0), Hp, Wp, h, w, Hp - h + 1, Wp - w + 1};
}

void forward_cpu(const at::Tensor& xp, const at::Tensor& z, XcorrMode mode, at::Tensor& out) {
  const Planes p = planes_of(xp, z);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "cvops_xcorr_cpu", [&] {
    using T = scalar_t;
    const T* x = xp.const_data_ptr<T>();
    const T* t = z.const_data_ptr<T>();
    T* o = out.data_ptr<T>();
    const int64_t plane = p.Hp * p.Wp, tplane = p.h * p.w, oplane = p.Ho * p.Wo;
    const auto correlate = CVOPS_CPU_SELECT(correlate_planes<T>);
    // Channels c0..c1 of sample b, their sum written to acc.
    auto add_channels = [&](int64_t b, int64_t c0, int64_t c1, T* acc) {
      correlate(x + (b * p.C + c0) * plane, plane, p.Wp, t + (p.template_of(b) * p.C + c0) * tplane,
                tplane, p.h, p.w, c1 - c0, acc, p.Ho, p.Wo);
    };
    if (mode == XcorrMode::kDepthwise) {
      at::parallel_for(0, p.B * p.C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          add_channels(task / p.C, task % p.C, task % p.C + 1, o + task * oplane);
        }
      });
      return;
    }
    const int64_t blocks = (p.C + kChannelBlock - 1) / kChannelBlock;
    auto partial = at::empty({p.B, blocks, oplane}, out.options());
    T* part = partial.data_ptr<T>();
    at::parallel_for(0, p.B * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / blocks, c0 = (task % blocks) * kChannelBlock;
        add_channels(b, c0, std::min(p.C, c0 + kChannelBlock), part + task * oplane);
      }
    });
    at::parallel_for(0, p.B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        T* acc = o + b * oplane;
        std::copy(part + b * blocks * oplane, part + (b * blocks + 1) * oplane, acc);
        for (int64_t k = 1; k < blocks; ++k) {
          const T* src = part + (b * blocks + k) * oplane;
          for (int64_t q = 0; q < oplane; ++q) acc[q] += src[q];
        }
      }
    });
  });
}

void backward_cpu(const at::Tensor& grad, const at::Tensor& xp, const at::Tensor& z, XcorrMode mode,
                  at::Tensor& grad_xp, at::Tensor& grad_z) {
  const Planes p = planes_of(xp, z);
  // dx is the correlation of the gradient, padded by the template's size − 1, by the flipped
  // template: the forward's tiled loop in gather form.
  const auto grad_padded =
      at::constant_pad_nd(grad, {p.w - 1, p.w - 1, p.h - 1, p.h - 1}, 0).contiguous();
  const auto flipped = z.flip({2, 3}).contiguous();
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "cvops_xcorr_backward_cpu", [&] {
    using T = scalar_t;
    const T* x = xp.const_data_ptr<T>();
    const T* g = grad.const_data_ptr<T>();
    const T* gp = grad_padded.const_data_ptr<T>();
    const T* zf = flipped.const_data_ptr<T>();
    T* gx = grad_xp.data_ptr<T>();
    T* gz = grad_z.data_ptr<T>();
    const int64_t plane = p.Hp * p.Wp, tplane = p.h * p.w, oplane = p.Ho * p.Wo;
    const int64_t Hg = p.Ho + 2 * (p.h - 1), Wg = p.Wo + 2 * (p.w - 1);
    const int64_t gchannels = mode == XcorrMode::kFull ? 1 : p.C;
    auto channel_of = [&](int64_t c) { return mode == XcorrMode::kFull ? 0 : c; };
    const auto correlate = CVOPS_CPU_SELECT(correlate_planes<T>);
    const auto template_grad = CVOPS_CPU_SELECT(template_grad_planes<T>);
    // dx: one task per (sample, channel) plane.
    at::parallel_for(0, p.B * p.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / p.C, c = task % p.C;
        correlate(gp + (b * gchannels + channel_of(c)) * Hg * Wg, 0, Wg,
                  zf + (p.template_of(b) * p.C + c) * tplane, 0, p.h, p.w, 1, gx + task * plane,
                  p.Hp, p.Wp);
      }
    });
    // dz: one task per template plane, over its search images in order.
    at::parallel_for(0, p.Bz * p.C, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> lanes(p.Wo);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bz = task / p.C, c = task % p.C;
        const int64_t b0 = p.Bz == 1 ? 0 : bz, images = p.Bz == 1 ? p.B : 1;
        template_grad(g + (b0 * gchannels + channel_of(c)) * oplane, gchannels * oplane, p.Ho, p.Wo,
                      x + (b0 * p.C + c) * plane, p.C * plane, p.Wp, p.h, p.w, images, lanes.data(),
                      gz + task * tplane);
      }
    });
  });
}

constexpr Loops kCpuLoops{&forward_cpu, &backward_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(xcorr_loops, kCpu, kCpuLoops);

}  // namespace cvops::xcorr
