// The per-plane and per-channel-block loops, compiled once per CPU level (common/cpu_levels.h):
// included by instance_norm_cpu.cpp only, inside its namespace.
namespace CVOPS_CPU_NS {

// One (sample, channel) plane of n values: statistics, then the affine (+ ReLU) output.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void forward_plane(const scalar_t* xp, acc_t gamma, acc_t beta, acc_t eps, bool relu, int64_t n,
                   scalar_t* op, acc_t* mean, acc_t* rstd) {
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
void backward_plane(const scalar_t* dy, const scalar_t* x, const scalar_t* out, acc_t m, acc_t r,
                    acc_t gamma, bool relu, int64_t n, scalar_t* dx, acc_t* dgamma, acc_t* dbeta) {
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
void forward_channels(const scalar_t* x, const acc_t* gamma, const acc_t* beta, acc_t eps,
                      bool relu, int64_t C, int64_t n, ChannelTask task, scalar_t* out, acc_t* mean,
                      acc_t* rstd) {
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
void backward_channels(const scalar_t* dy, const scalar_t* x, const scalar_t* out,
                       const acc_t* mean, const acc_t* rstd, const acc_t* gamma, bool relu,
                       int64_t C, int64_t n, ChannelTask task, scalar_t* dx, acc_t* dgamma,
                       acc_t* dbeta) {
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

}  // namespace CVOPS_CPU_NS
