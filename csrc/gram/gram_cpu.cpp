// CPU kernels of the gram family. The Gram matrix is symmetric, so only the panels on and above
// the diagonal are multiplied (by at::bmm, i.e. MKL GEMM) and the rest is mirrored: with panels of
// P rows the GEMMs do (1/2 + P/2C) of the FLOPs of F·Fᵀ.
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/checks.h"
#include "common/cpu_features.h"
#include "common/dispatch.h"
#include "gram/gram.h"

namespace cvops::gram {

// Rows per GEMM panel: narrow enough to skip most of the lower triangle (the GEMMs do
// 1/2 + P/2C of bmm's FLOPs), wide enough to keep them efficient (measured on AVX-512, 2 cores).
int64_t panel_rows(int64_t channels) {
  return std::clamp<int64_t>((channels / 2 + 15) / 16 * 16, 32, 64);
}

std::vector<at::Tensor> upper_panels(const at::Tensor& features) {
  const int64_t C = features.size(1);
  const int64_t panel = panel_rows(C);
  std::vector<at::Tensor> panels;  // panels[p]: [B, rows, C − i0], rows i0.. of G from column i0
  for (int64_t i0 = 0; i0 < C; i0 += panel) {
    const int64_t rows = std::min(panel, C - i0);
    panels.push_back(at::bmm(features.narrow(1, i0, rows), features.narrow(1, i0, C - i0).transpose(1, 2)));
  }
  return panels;
}

namespace {

constexpr int64_t kMirrorBlock = 64;  // lower-triangle copy in L1-sized blocks
constexpr int64_t kPairBlock = 32;    // residual pass: three 32 × 32 tiles stay in a 32 KiB L1

// g[i, j] = g[j, i] for i > j over one C × C plane, block by block so both sides stay in cache.
template <typename T>
void mirror_upper_to_lower(T* g, int64_t C) {
  for (int64_t r0 = 0; r0 < C; r0 += kMirrorBlock) {
    const int64_t r1 = std::min(C, r0 + kMirrorBlock);
    for (int64_t c0 = 0; c0 < r1; c0 += kMirrorBlock) {
      const int64_t c1 = std::min(c0 + kMirrorBlock, r1);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < std::min(c1, r); ++c) g[r * C + c] = g[c * C + r];
      }
    }
  }
}

#if defined(__x86_64__)
// dst[j, i] = src[i, j] for an 8 × 8 float block (the classic unpack/shuffle/permute transpose).
__attribute__((target("avx2"))) inline void transpose_8x8(const float* src, float* dst, int64_t ld) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// The float mirror in 8 × 8 blocks below the diagonal; the diagonal blocks and the ragged edge
// (C not a multiple of 8) go through the scalar loop.
__attribute__((target("avx2"))) void mirror_upper_to_lower_avx2(float* g, int64_t C) {
  const int64_t full = C / 8 * 8;
  for (int64_t r0 = 8; r0 < full; r0 += 8) {
    for (int64_t c0 = 0; c0 < r0; c0 += 8) transpose_8x8(g + c0 * C + r0, g + r0 * C + c0, C);
  }
  for (int64_t r = 0; r < C; ++r) {
    const int64_t c_begin = r < full ? r / 8 * 8 : 0;  // diagonal block, or the whole ragged row
    for (int64_t c = c_begin; c < r; ++c) g[r * C + c] = g[c * C + r];
  }
}
#endif

template <typename T>
void mirror_plane(T* g, int64_t C) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_has_avx2()) return mirror_upper_to_lower_avx2(g, C);
  }
#endif
  mirror_upper_to_lower(g, C);
}

// gram [B, C, C] = scale·F·Fᵀ for features [B, C, N], both contiguous in the same dtype (only the
// upper triangle unless `mirror`). Each panel of rows is one at::bmm across the batch (MKL
// threads it over samples); then one pass per sample, threaded by us with no GEMM inside, scales
// the panels into the upper triangle and mirrors it while the plane is in cache.
void symmetric_gram(const at::Tensor& features, double scale, bool mirror, at::Tensor& gram) {
  const int64_t B = features.size(0), C = features.size(1);
  const int64_t panel = panel_rows(C);
  const auto panels = upper_panels(features);
  AT_DISPATCH_FLOATING_TYPES(gram.scalar_type(), "cvops_gram_assemble", [&] {
    const auto s = static_cast<scalar_t>(scale);
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        scalar_t* g = gram.data_ptr<scalar_t>() + b * C * C;
        for (size_t p = 0; p < panels.size(); ++p) {
          const int64_t i0 = static_cast<int64_t>(p) * panel, width = C - i0;
          const int64_t rows = panels[p].size(1);
          const scalar_t* src = panels[p].data_ptr<scalar_t>() + b * rows * width;
          for (int64_t r = 0; r < rows; ++r) {
            scalar_t* dst = g + (i0 + r) * C + i0;
            const scalar_t* row = src + r * width;
            for (int64_t c = r; c < width; ++c) dst[c] = s * row[c];
          }
        }
        if (mirror) mirror_plane(g, C);
      }
    });
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
  else symmetric_gram(features, scale, /*mirror=*/true, gram);
  return gram.to(x.scalar_type());
}

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
  else symmetric_gram(features, scale, /*mirror=*/false, residual);
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
  m.impl("_gram_matrix_backward", &gram_matrix_backward);
  m.impl("_style_loss", &style_loss_cpu);
  m.impl("_style_loss_backward", &style_loss_backward);
}

}  // namespace cvops::gram
