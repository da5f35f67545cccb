// CPU symmetric GEMM: panels of rows on and above the diagonal, each one at::bmm (MKL) across the
// batch, doing (1/2 + P/2C) of bmm's FLOPs; then one threaded pass per sample scales the panels
// into place and mirrors the upper triangle while the plane is in cache.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <type_traits>

#include "common/symmetric_gram.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/cpu_levels.h"
#include "common/dispatch.h"

namespace cvops {
namespace {

constexpr int64_t kMirrorBlock = 64;  // lower-triangle copy in L1-sized blocks

#define CVOPS_CPU_BODIES "common/symmetric_gram_cpu_bodies.h"
#include "common/cpu_levels_compile.h"

}  // namespace

// Rows per GEMM panel: narrow enough to skip most of the lower triangle (the GEMMs do
// 1/2 + P/2C of bmm's FLOPs), wide enough to keep them efficient (measured on AVX-512, 2 cores).
int64_t gram_panel_rows(int64_t channels) {
  return std::clamp<int64_t>((channels / 2 + 15) / 16 * 16, 32, 64);
}

std::vector<at::Tensor> gram_upper_panels(const at::Tensor& features) {
  const int64_t C = features.size(1);
  const int64_t panel = gram_panel_rows(C);
  std::vector<at::Tensor> panels;  // panels[p]: [B, rows, C − i0], rows i0.. of G from column i0
  for (int64_t i0 = 0; i0 < C; i0 += panel) {
    const int64_t rows = std::min(panel, C - i0);
    panels.push_back(
        at::bmm(features.narrow(1, i0, rows), features.narrow(1, i0, C - i0).transpose(1, 2)));
  }
  return panels;
}

// Each panel of rows is one at::bmm across the batch (MKL threads it over samples); then one pass
// per sample, threaded by us with no GEMM inside, scales the panels into the upper triangle and
// mirrors it while the plane is in cache.
void symmetric_gram_into_cpu(const at::Tensor& features, double scale, bool mirror,
                             at::Tensor& gram) {
  const int64_t B = features.size(0), C = features.size(1);
  const int64_t panel = gram_panel_rows(C);
  const auto panels = gram_upper_panels(features);
  AT_DISPATCH_FLOATING_TYPES(gram.scalar_type(), "cvops_gram_assemble", [&] {
    const auto s = static_cast<scalar_t>(scale);
    const auto mirror_at_level = CVOPS_CPU_SELECT(mirror_plane<scalar_t>);
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
        if (mirror) mirror_at_level(g, C);
      }
    });
  });
}

at::Tensor symmetric_gram_cpu(const char* /*op*/, const at::Tensor& features, double scale) {
  const auto f = features.to(opmath_dtype(features.scalar_type())).contiguous();
  auto gram = at::empty({f.size(0), f.size(1), f.size(1)}, f.options());
  symmetric_gram_into_cpu(f, scale, /*mirror=*/true, gram);
  return gram.to(features.scalar_type());
}

}  // namespace cvops
