// CPU kernels of the instance_norm family.
// NCHW: one task per (sample, channel) plane; a plane stays in L2 across the passes, so the
// statistics are the exact two-pass ones (mean, then centred squares) at little cost.
// channels_last: one task per (sample, block of channels), vectorised across the contiguous
// channels; statistics in one pass around a per-channel pivot (the first value), which keeps the
// cancellation of Σd² − (Σd)²/n small, then one normalising pass.
#include <ATen/Parallel.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>

#include "common/cpu_levels.h"
#include "common/cpu_reduce.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "instance_norm/instance_norm.h"

namespace cvops::instance_norm {
namespace {

constexpr int kLanes = 8;              // independent partial sums: vectorisable, fixed order
constexpr int64_t kChannelBlock = 64;  // channels_last: channels per task
constexpr int64_t kTaskElements = 1 << 15;  // parallel_for grain: about this many elements


template <typename acc_t>
inline acc_t activate(acc_t y, bool relu) {
  return relu ? std::max(y, acc_t(0)) : y;  // NaN passes through, as in torch.relu
}

// dy' of the affine output: the ReLU lets the gradient through only where it was positive.
template <typename acc_t, typename scalar_t>
inline acc_t masked_grad(scalar_t dy, scalar_t out, bool relu) {
  return (relu && !(static_cast<acc_t>(out) > acc_t(0))) ? acc_t(0) : static_cast<acc_t>(dy);
}

int64_t grain(int64_t elements_per_task) {
  return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(elements_per_task, 1));
}

// channels_last tasks: (sample b, channels [c0, c0 + width)), rows of C values per position.
struct ChannelTask {
  int64_t b, c0, width;
};

#define CVOPS_CPU_BODIES "instance_norm/instance_norm_cpu_bodies.h"
#include "common/cpu_levels_compile.h"

// Runs body(task) for every (sample, block of channels) task, in parallel.
template <typename Body>
void for_channel_tasks(int64_t B, int64_t C, int64_t n, const Body& body) {
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, B * blocks, grain(n * kChannelBlock), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c0 = (t % blocks) * kChannelBlock;
      body(ChannelTask{t / blocks, c0, std::min(kChannelBlock, C - c0)});
    }
  });
}

void forward_cpu(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, double eps,
                 bool relu, bool channels_last, at::Tensor& out, at::Tensor& mean,
                 at::Tensor& rstd) {
  const int64_t B = x.size(0), C = x.size(1), n = x.size(2) * x.size(3);
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_instance_norm_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto e = static_cast<acc_t>(eps);
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    const acc_t* g = gamma.const_data_ptr<acc_t>();
    const acc_t* b = beta.const_data_ptr<acc_t>();
    scalar_t* ys = out.data_ptr<scalar_t>();
    acc_t* m = mean.data_ptr<acc_t>();
    acc_t* r = rstd.data_ptr<acc_t>();
    if (channels_last) {
      for_channel_tasks(B, C, n, [&](ChannelTask task) {
        CVOPS_CPU_SELECT(forward_channels<scalar_t>)(xs, g, b, e, relu, C, n, task, ys, m, r);
      });
      return;
    }
    at::parallel_for(0, B * C, grain(n), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        CVOPS_CPU_SELECT(forward_plane<scalar_t>)(xs + p * n, g[p], b[p], e, relu, n, ys + p * n,
                                                  m + p, r + p);
      }
    });
  });
}

void backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out,
                  const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& gamma,
                  bool relu, bool channels_last, at::Tensor& grad_x, at::Tensor& grad_gamma,
                  at::Tensor& grad_beta) {
  const int64_t B = x.size(0), C = x.size(1), n = x.size(2) * x.size(3);
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_instance_norm_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto* dy = grad_out.const_data_ptr<scalar_t>();
    const auto* xs = x.const_data_ptr<scalar_t>();
    const auto* ys = out.const_data_ptr<scalar_t>();
    const auto* m = mean.const_data_ptr<acc_t>();
    const auto* r = rstd.const_data_ptr<acc_t>();
    const auto* g = gamma.const_data_ptr<acc_t>();
    auto* dx = grad_x.data_ptr<scalar_t>();
    auto* dg = grad_gamma.data_ptr<acc_t>();
    auto* db = grad_beta.data_ptr<acc_t>();
    if (channels_last) {
      for_channel_tasks(B, C, n, [&](ChannelTask task) {
        CVOPS_CPU_SELECT(backward_channels<scalar_t>)(dy, xs, ys, m, r, g, relu, C, n, task, dx, dg,
                                                      db);
      });
      return;
    }
    at::parallel_for(0, B * C, grain(n), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t o = p * n;
        CVOPS_CPU_SELECT(backward_plane<scalar_t>)(dy + o, xs + o, ys + o, m[p], r[p], g[p], relu,
                                                   n, dx + o, dg + p, db + p);
      }
    });
  });
}

constexpr Loops kCpuLoops{&forward_cpu, &backward_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(instance_norm_loops, kCpu, kCpuLoops);

}  // namespace cvops::instance_norm
