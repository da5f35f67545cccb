// CPU kernels of the gram family. The Gram matrix is symmetric, so only the panels on and above
// the diagonal are multiplied (by at::addmm, i.e. MKL/oneDNN GEMM) and the rest is mirrored:
// with panels of P rows the GEMMs do (1/2 + P/2C) of the FLOPs of F·Fᵀ.
#include <ATen/Parallel.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

#include "common/checks.h"
#include "common/dispatch.h"
#include "gram/gram.h"

namespace cvops::gram {
namespace {

constexpr int64_t kMirrorBlock = 64;  // lower-triangle copy in L1-sized blocks

// Rows per GEMM panel: narrow enough to skip most of the lower triangle, wide enough to keep the
// GEMMs efficient.
int64_t panel_rows(int64_t channels) {
  return std::max<int64_t>(32, ((channels / 8 + 15) / 16) * 16);
}

// G[b, i, j] = G[b, j, i] for i > j, block by block so both sides stay in cache.
template <typename T>
void mirror_upper_to_lower(T* gram, int64_t batch, int64_t C) {
  const int64_t blocks = (C + kMirrorBlock - 1) / kMirrorBlock;
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      T* g = gram + (task / blocks) * C * C;
      const int64_t r0 = (task % blocks) * kMirrorBlock;
      const int64_t r1 = std::min(C, r0 + kMirrorBlock);
      for (int64_t c0 = 0; c0 < r1; c0 += kMirrorBlock) {
        const int64_t c1 = std::min(c0 + kMirrorBlock, r1);
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t c = c0; c < std::min(c1, r); ++c) g[r * C + c] = g[c * C + r];
        }
      }
    }
  });
}

// gram [B, C, C] = scale·F·Fᵀ for features [B, C, N], both contiguous in the same dtype.
void symmetric_gram(const at::Tensor& features, double scale, at::Tensor& gram) {
  const int64_t B = features.size(0), C = features.size(1);
  const int64_t panel = panel_rows(C);
  for (int64_t b = 0; b < B; ++b) {
    const auto f = features[b];
    auto g = gram[b];
    for (int64_t i0 = 0; i0 < C; i0 += panel) {
      const int64_t rows = std::min(panel, C - i0);
      auto out = g.narrow(0, i0, rows).narrow(1, i0, C - i0);
      // beta = 0: the uninitialised output is never read.
      at::addmm_out(out, out, f.narrow(0, i0, rows), f.narrow(0, i0, C - i0).t(), 0.0, scale);
    }
  }
  AT_DISPATCH_FLOATING_TYPES(gram.scalar_type(), "cvops_gram_mirror", [&] {
    mirror_upper_to_lower(gram.data_ptr<scalar_t>(), B, C);
  });
}

at::Tensor features_in_opmath(const at::Tensor& x, const FeatureShape& shape) {
  return x.reshape({shape.batch, shape.channels, shape.points})
      .to(opmath_dtype(x.scalar_type()))
      .contiguous();
}

at::Tensor gram_matrix_cpu(const at::Tensor& x, std::string_view normalize, double divisor) {
  constexpr const char* op = "gram_matrix";
  const auto shape = check_features(op, x);
  const double scale = resolve_scale(op, normalize, divisor, shape);
  const auto features = features_in_opmath(x, shape);
  auto gram = at::empty({shape.batch, shape.channels, shape.channels}, features.options());
  if (shape.points == 0) gram.zero_();
  else symmetric_gram(features, scale, gram);
  return gram.to(x.scalar_type());
}

// residual_b = G_b − S_{s(b)} in place, and per-sample Σ residual², with s(b) the target row.
template <typename T>
void residual_and_loss(T* gram, const T* target, int64_t target_stride, const int64_t* index,
                       double* per_sample, int64_t batch, int64_t C) {
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t s = index ? index[b] : b;
      const T* t = target + s * target_stride;
      T* g = gram + b * C * C;
      double total = 0;
      for (int64_t row = 0; row < C; ++row) {
        T row_total = 0;  // a row is short: opmath accumulation, then double across rows
        for (int64_t c = 0; c < C; ++c) {
          const T r = g[row * C + c] - t[row * C + c];
          g[row * C + c] = r;
          row_total += r * r;
        }
        total += row_total;
      }
      per_sample[b] = total;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> style_loss_cpu(const at::Tensor& x, const at::Tensor& target,
                                                  const std::optional<at::Tensor>& target_index,
                                                  std::string_view normalize, double divisor,
                                                  std::string_view reduction, bool keep_residual) {
  constexpr const char* op = "style_loss";
  const auto shape = check_features(op, x);
  const double scale = resolve_scale(op, normalize, divisor, shape);
  const auto mode = parse_reduction(op, reduction);
  check_style_target(op, x, shape, target, target_index);

  const auto features = features_in_opmath(x, shape);
  const int64_t C = shape.channels;
  auto residual = at::empty({shape.batch, C, C}, features.options());
  if (shape.points == 0) residual.zero_();
  else symmetric_gram(features, scale, residual);
  const auto target_m = target.to(features.scalar_type()).contiguous();
  const auto index = target_index.has_value() ? target_index->contiguous() : at::Tensor();
  auto per_sample = at::empty({shape.batch}, features.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(residual.scalar_type(), "cvops_style_loss_cpu", [&] {
    residual_and_loss(residual.data_ptr<scalar_t>(), target_m.data_ptr<scalar_t>(),
                      target.dim() == 3 ? C * C : 0,
                      index.defined() ? index.data_ptr<int64_t>() : nullptr,
                      per_sample.data_ptr<double>(), shape.batch, C);
  });
  auto loss = reduce_loss(per_sample, mode, shape, x.scalar_type());
  return {loss, keep_residual ? residual : empty_residual(x)};
}

}  // namespace

TORCH_LIBRARY_IMPL(cvops, CPU, m) {
  m.impl("gram_matrix", &gram_matrix_cpu);
  m.impl("gram_matrix_backward", &gram_matrix_backward);
  m.impl("style_loss", &style_loss_cpu);
  m.impl("style_loss_backward", &style_loss_backward);
}

}  // namespace cvops::gram
