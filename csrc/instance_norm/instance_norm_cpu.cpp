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

// One (sample, channel) plane of n values: statistics, then the affine (+ ReLU) output.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
C10_ALWAYS_INLINE void forward_plane_body(const scalar_t* xp, acc_t gamma, acc_t beta, acc_t eps,
                                          bool relu, int64_t n, scalar_t* op, acc_t* mean,
                                          acc_t* rstd) {
  const acc_t m =
      lane_sum<kLanes, acc_t>(n, [&](int64_t i) { return static_cast<acc_t>(xp[i]); }) / n;
  const acc_t var = lane_sum<kLanes, acc_t>(n,
                                            [&](int64_t i) {
                                              const acc_t d = static_cast<acc_t>(xp[i]) - m;
                                              return d * d;
                                            }) /
                    n;
  const acc_t r = acc_t(1) / std::sqrt(var + eps);
  *mean = m;
  *rstd = r;
  const acc_t scale = gamma * r, shift = beta - m * scale;
  if (relu) {
    for (int64_t i = 0; i < n; ++i)
      op[i] = static_cast<scalar_t>(activate(static_cast<acc_t>(xp[i]) * scale + shift, true));
  } else {
    for (int64_t i = 0; i < n; ++i)
      op[i] = static_cast<scalar_t>(static_cast<acc_t>(xp[i]) * scale + shift);
  }
}

// One plane of the backward: Σdy', Σdy'·x̂, then dx.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
C10_ALWAYS_INLINE void backward_plane_body(const scalar_t* dy, const scalar_t* x,
                                           const scalar_t* out, acc_t m, acc_t r, acc_t gamma,
                                           bool relu, int64_t n, scalar_t* dx, acc_t* dgamma,
                                           acc_t* dbeta) {
  auto grad = [&](int64_t i) { return masked_grad<acc_t>(dy[i], out[i], relu); };
  auto xhat = [&](int64_t i) { return (static_cast<acc_t>(x[i]) - m) * r; };
  const acc_t sum_dy = lane_sum<kLanes, acc_t>(n, grad);
  const acc_t sum_dy_xhat =
      lane_sum<kLanes, acc_t>(n, [&](int64_t i) { return grad(i) * xhat(i); });
  *dbeta = sum_dy;
  *dgamma = sum_dy_xhat;
  const acc_t k = gamma * r, a = sum_dy / n, b = sum_dy_xhat / n;
  for (int64_t i = 0; i < n; ++i) dx[i] = static_cast<scalar_t>(k * (grad(i) - a - xhat(i) * b));
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
C10_ALWAYS_INLINE void forward_channels_body(const scalar_t* x, const acc_t* gamma,
                                             const acc_t* beta, acc_t eps, bool relu, int64_t C,
                                             int64_t n, ChannelTask task, scalar_t* out,
                                             acc_t* mean, acc_t* rstd) {
  const int64_t base = task.b * n * C + task.c0, stat = task.b * C + task.c0, w = task.width;
  acc_t pivot[kChannelBlock], sum[kChannelBlock] = {}, squares[kChannelBlock] = {};
  for (int64_t c = 0; c < w; ++c) pivot[c] = static_cast<acc_t>(x[base + c]);
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* row = x + base + i * C;
    for (int64_t c = 0; c < w; ++c) {
      const acc_t d = static_cast<acc_t>(row[c]) - pivot[c];
      sum[c] += d;
      squares[c] += d * d;
    }
  }
  acc_t scale[kChannelBlock], shift[kChannelBlock];
  for (int64_t c = 0; c < w; ++c) {
    const acc_t offset = sum[c] / n;
    const acc_t var = std::max(squares[c] / n - offset * offset, acc_t(0));
    const acc_t m = pivot[c] + offset, r = acc_t(1) / std::sqrt(var + eps);
    mean[stat + c] = m;
    rstd[stat + c] = r;
    scale[c] = gamma[stat + c] * r;
    shift[c] = beta[stat + c] - m * scale[c];
  }
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* row = x + base + i * C;
    scalar_t* row_out = out + base + i * C;
    for (int64_t c = 0; c < w; ++c) {
      row_out[c] =
          static_cast<scalar_t>(activate(static_cast<acc_t>(row[c]) * scale[c] + shift[c], relu));
    }
  }
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
C10_ALWAYS_INLINE void backward_channels_body(const scalar_t* dy, const scalar_t* x,
                                              const scalar_t* out, const acc_t* mean,
                                              const acc_t* rstd, const acc_t* gamma, bool relu,
                                              int64_t C, int64_t n, ChannelTask task, scalar_t* dx,
                                              acc_t* dgamma, acc_t* dbeta) {
  const int64_t base = task.b * n * C + task.c0, stat = task.b * C + task.c0, w = task.width;
  acc_t sum_dy[kChannelBlock] = {}, sum_dy_xhat[kChannelBlock] = {};
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = base + i * C;
    for (int64_t c = 0; c < w; ++c) {
      const acc_t g = masked_grad<acc_t>(dy[row + c], out[row + c], relu);
      sum_dy[c] += g;
      sum_dy_xhat[c] += g * (static_cast<acc_t>(x[row + c]) - mean[stat + c]) * rstd[stat + c];
    }
  }
  acc_t k[kChannelBlock], a[kChannelBlock], b[kChannelBlock];
  for (int64_t c = 0; c < w; ++c) {
    dbeta[stat + c] = sum_dy[c];
    dgamma[stat + c] = sum_dy_xhat[c];
    k[c] = gamma[stat + c] * rstd[stat + c];
    a[c] = sum_dy[c] / n;
    b[c] = sum_dy_xhat[c] / n;
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = base + i * C;
    for (int64_t c = 0; c < w; ++c) {
      const acc_t g = masked_grad<acc_t>(dy[row + c], out[row + c], relu);
      const acc_t xhat = (static_cast<acc_t>(x[row + c]) - mean[stat + c]) * rstd[stat + c];
      dx[row + c] = static_cast<scalar_t>(k[c] * (g - a[c] - xhat * b[c]));
    }
  }
}

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
