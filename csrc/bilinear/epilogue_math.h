#pragma once
// The element-wise math of the bilinear epilogue, shared by the CPU and CUDA kernels so both
// compute the same values: u = sign(z)·√(|z| + eps), out = u / max(‖u‖, kNormEps).
#include <c10/macros/Macros.h>

#include <cmath>

namespace cvops::bilinear {

// F.normalize's clamp: u / max(‖u‖, kNormEps).
constexpr double kNormEps = 1e-12;

template <typename T>
C10_HOST_DEVICE inline T signed_sqrt(T z, T eps) {
  // sign(0) = 0, as torch.sign: the gradient there is 0 too (see signed_sqrt_slope).
  // One sqrt and a select (no branches): vectorises on CPU, no divergence on GPU.
  // z = NaN keeps NaN (root is NaN, root·0 too), as sign(z)·√(|z| + eps); z = ±0 gives +0.
  const T root = std::sqrt(std::abs(z) + eps);
  return z > T(0) ? root : (z < T(0) ? -root : root * T(0));
}

template <typename T>
C10_HOST_DEVICE inline T maybe_signed_sqrt(T z, T eps, bool enabled) {
  return enabled ? signed_sqrt(z, eps) : z;
}

// d u / d z read from u itself: 1 / (2|u|), 0 where u = 0 (z = 0). |u| >= √eps elsewhere, so the
// slope stays finite for eps > 0.
template <typename T>
C10_HOST_DEVICE inline T signed_sqrt_slope(T u) {
  return u != T(0) ? T(0.5) / (u > T(0) ? u : -u) : T(0);
}

// The L2 scale and its clamp, as F.normalize: divide by max(norm, kNormEps).
template <typename T>
C10_HOST_DEVICE inline T clamped_norm(T norm) {
  // A NaN norm stays NaN (clamp_min propagates it): never 1 / kNormEps on a row that holds NaN.
  return norm < T(kNormEps) ? T(kNormEps) : norm;
}

// grad_z for one element from the forward's out and its gradient g; with L2, the row's norm
// (‖u‖ before the clamp) and dot = Σ out·g over the row. Where the clamp is inactive the L2
// gradient also removes the out·(out·g) component; where it is active L2 is a plain scaling.
template <typename T>
C10_HOST_DEVICE inline T epilogue_grad(T g, T out, bool l2, T norm, T dot, bool signed_sqrt) {
  T du = g, scale = 1;
  if (l2) {
    scale = clamped_norm(norm);
    du = (norm > T(kNormEps) ? g - out * dot : g) / scale;
  }
  if (!signed_sqrt) return du;
  return du * signed_sqrt_slope(out * scale);
}

}  // namespace cvops::bilinear
