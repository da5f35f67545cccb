// CPU loops of the gram family: the Gram matrix is common/symmetric_gram's (upper-triangle GEMM
// panels, mirrored); the style loss reduces (G − S)² over the upper triangle's panels and keeps
// the symmetric residual in place.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>

#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/symmetric_gram.h"
#include "gram/gram.h"

namespace cvops::gram {
namespace {

constexpr int64_t kPairBlock = 32;  // residual pass: three 32 × 32 tiles stay in a 32 KiB L1

// From the upper triangle of G_b: per-sample Σ (G_b − S)² with S = target[s(b)], and in place the
// symmetric residual G_b − (S + Sᵀ)/2 (what the backward multiplies F by). Element pairs (r, c)
// and (c, r) are visited together, in blocks that keep both in cache.
template <typename T>
void residual_and_loss(T* gram, const T* target, int64_t target_stride, const int64_t* index,
                       double* per_sample, int64_t batch, int64_t C) {
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* t = target + (index ? index[b] : b) * target_stride;
      T* g = gram + b * C * C;
      double total = 0;
      for (int64_t r0 = 0; r0 < C; r0 += kPairBlock) {
        const int64_t r1 = std::min(C, r0 + kPairBlock);
        for (int64_t c0 = r0; c0 < C; c0 += kPairBlock) {
          const int64_t c1 = std::min(C, c0 + kPairBlock);
          T block_total = 0;  // a block is short: opmath accumulation, then double across blocks
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t c = std::max(c0, r); c < c1; ++c) {
              const T value = g[r * C + c], upper = t[r * C + c], lower = t[c * C + r];
              const T du = value - upper, dl = value - lower;
              block_total += c == r ? du * du : du * du + dl * dl;
              const T residual = value - T(0.5) * (upper + lower);
              g[r * C + c] = residual;
              g[c * C + r] = residual;
            }
          }
          total += block_total;
        }
      }
      per_sample[b] = total;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> style_loss_cpu(const char* /*op*/, const at::Tensor& x,
                                                  const at::Tensor& target, const at::Tensor& index,
                                                  int64_t target_stride, double scale,
                                                  bool /*keep_residual*/) {
  const int64_t B = x.size(0), C = x.size(1);
  const auto features = x.to(opmath_dtype(x.scalar_type())).contiguous();
  auto residual = at::empty({B, C, C}, features.options());
  if (x.size(2) == 0) residual.zero_();
  else symmetric_gram_into_cpu(features, scale, /*mirror=*/false, residual);
  auto per_sample = at::empty({B}, features.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(residual.scalar_type(), "cvops_style_loss_cpu", [&] {
    residual_and_loss(residual.data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(),
                      target_stride, index.defined() ? index.const_data_ptr<int64_t>() : nullptr,
                      per_sample.data_ptr<double>(), B, C);
  });
  return {per_sample, residual};
}

constexpr Loops kCpuLoops{&symmetric_gram_cpu, &style_loss_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(gram_loops, kCpu, kCpuLoops);

}  // namespace cvops::gram
