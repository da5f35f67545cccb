// The per-plane and per-channel-block loops of the CPU level being compiled (common/cpu_levels.h):
// included by instance_norm_cpu.cpp only, inside its namespace. The bodies themselves are the
// always-inlined *_body functions of instance_norm_cpu.cpp: written outside the level regions, their
// lambdas reach lane_sum as default-target code, which GCC sums with a short out-of-line loop; the
// same sums compiled inside a region vectorise as interleaved 8-lane groups (shuffles and blends)
// and made the NCHW backward 1.5-1.8x slower.
namespace CVOPS_CPU_NS {

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void forward_plane(const scalar_t* xp, acc_t gamma, acc_t beta, acc_t eps, bool relu, int64_t n,
                   scalar_t* op, acc_t* mean, acc_t* rstd) {
  forward_plane_body<scalar_t, acc_t>(xp, gamma, beta, eps, relu, n, op, mean, rstd);
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void backward_plane(const scalar_t* dy, const scalar_t* x, const scalar_t* out, acc_t m, acc_t r,
                    acc_t gamma, bool relu, int64_t n, scalar_t* dx, acc_t* dgamma, acc_t* dbeta) {
  backward_plane_body<scalar_t, acc_t>(dy, x, out, m, r, gamma, relu, n, dx, dgamma, dbeta);
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void forward_channels(const scalar_t* x, const acc_t* gamma, const acc_t* beta, acc_t eps,
                      bool relu, int64_t C, int64_t n, ChannelTask task, scalar_t* out, acc_t* mean,
                      acc_t* rstd) {
  forward_channels_body<scalar_t, acc_t>(x, gamma, beta, eps, relu, C, n, task, out, mean, rstd);
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void backward_channels(const scalar_t* dy, const scalar_t* x, const scalar_t* out,
                       const acc_t* mean, const acc_t* rstd, const acc_t* gamma, bool relu,
                       int64_t C, int64_t n, ChannelTask task, scalar_t* dx, acc_t* dgamma,
                       acc_t* dbeta) {
  backward_channels_body<scalar_t, acc_t>(dy, x, out, mean, rstd, gamma, relu, C, n, task, dx,
                                          dgamma, dbeta);
}

}  // namespace CVOPS_CPU_NS
