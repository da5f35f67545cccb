// CPU kernels of the boxes family. Pairwise IoU: the per-box quantities (corners, area, centre,
// atan(w/h)) are computed once, set 2 is laid out field by field, and each row of the output is
// one branch-free loop over set 2 that the compiler vectorises; the float row is also compiled
// for AVX2 (target_clones: GCC picks the variant at load time from the CPU's features).
#include <ATen/Parallel.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "boxes/boxes.h"
#include "boxes/iou_pair.h"
#include "common/cpu_features.h"
#include "common/dispatch.h"

namespace cvops::boxes {
namespace {

constexpr int64_t kRowsPerTask = 16;
// Rows of set 1 against every box of set 2 (field-major, so each field is one contiguous run).
template <IouKind kind, typename T>
C10_ALWAYS_INLINE void rows_of(const T* a_rows, int64_t rows, const T* b_fields, int64_t M,
                                 T* out) {
  // Restrict-qualified runs: without them the vectoriser gives up on the alias checks of nine
  // streams (DIoU/CIoU read all eight fields).
  const T* __restrict x1 = b_fields;
  const T* __restrict y1 = b_fields + M;
  const T* __restrict x2 = b_fields + 2 * M;
  const T* __restrict y2 = b_fields + 3 * M;
  const T* __restrict area = b_fields + 4 * M;
  const T* __restrict cx = b_fields + 5 * M;
  const T* __restrict cy = b_fields + 6 * M;
  const T* __restrict aspect = b_fields + 7 * M;
  for (int64_t r = 0; r < rows; ++r) {
    const Box<T> a = box_at(a_rows, r);
    T* __restrict o = out + r * M;
    for (int64_t j = 0; j < M; ++j) {
      o[j] = pair_value<kind>(a, Box<T>{x1[j], y1[j], x2[j], y2[j], area[j], cx[j], cy[j], aspect[j]});
    }
  }
}

template <typename T>
C10_ALWAYS_INLINE void iou_rows_impl(const T* a_rows, int64_t rows, const T* b_fields,
                                       int64_t M, IouKind kind, T* out) {
  switch (kind) {
    case IouKind::kIou: return rows_of<IouKind::kIou>(a_rows, rows, b_fields, M, out);
    case IouKind::kGiou: return rows_of<IouKind::kGiou>(a_rows, rows, b_fields, M, out);
    case IouKind::kDiou: return rows_of<IouKind::kDiou>(a_rows, rows, b_fields, M, out);
    case IouKind::kCiou: return rows_of<IouKind::kCiou>(a_rows, rows, b_fields, M, out);
  }
}

template <typename T>
void iou_rows(const T* a_rows, int64_t rows, const T* b_fields, int64_t M, IouKind kind, T* out) {
  iou_rows_impl(a_rows, rows, b_fields, M, kind, out);
}

#if defined(__x86_64__)
__attribute__((target_clones("avx2", "default"))) void iou_rows(const float* a_rows, int64_t rows,
                                                                const float* b_fields, int64_t M,
                                                                IouKind kind, float* out) {
  iou_rows_impl(a_rows, rows, b_fields, M, kind, out);
}
#endif

void pairwise_cpu(const at::Tensor& fields1, const at::Tensor& fields2, IouKind kind,
                  at::Tensor& out) {
  const int64_t sets = fields1.size(0), N = fields1.size(1), M = fields2.size(2);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_box_iou_cpu", [&] {
    const scalar_t* a = fields1.const_data_ptr<scalar_t>();
    const scalar_t* b = fields2.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t tasks_per_set = (N + kRowsPerTask - 1) / kRowsPerTask;
    at::parallel_for(0, sets * tasks_per_set, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t set = t / tasks_per_set, r0 = (t % tasks_per_set) * kRowsPerTask;
        const int64_t rows = std::min(kRowsPerTask, N - r0);
        iou_rows(a + (set * N + r0) * kBoxFields, rows, b + set * kBoxFields * M, M, kind,
                 o + (set * N + r0) * M);
      }
    });
  });
}

constexpr int64_t kPairsPerTask = 2048;

void aligned_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, IouKind kind, BoxFormat fmt,
                 at::Tensor& out) {
  const int64_t pairs = boxes1.size(0);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_box_iou_aligned_cpu", [&] {
    const scalar_t* a = boxes1.const_data_ptr<scalar_t>();
    const scalar_t* b = boxes2.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
      at::parallel_for(0, pairs, kPairsPerTask, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) o[p] = aligned_value<K>(a + 4 * p, b + 4 * p, fmt);
      });
    });
  });
}

void aligned_backward_cpu(const at::Tensor& grad, const at::Tensor& boxes1,
                          const at::Tensor& boxes2, IouKind kind, BoxFormat fmt,
                          at::Tensor& grad1, at::Tensor& grad2) {
  const int64_t pairs = boxes1.size(0);
  AT_DISPATCH_FLOATING_TYPES(grad1.scalar_type(), "cvops_box_iou_aligned_backward_cpu", [&] {
    const scalar_t* a = boxes1.const_data_ptr<scalar_t>();
    const scalar_t* b = boxes2.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* ga = grad1.data_ptr<scalar_t>();
    scalar_t* gb = grad2.data_ptr<scalar_t>();
    dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
      at::parallel_for(0, pairs, kPairsPerTask, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          aligned_grad<K>(a + 4 * p, b + 4 * p, fmt, g[p], ga + 4 * p, gb + 4 * p);
        }
      });
    });
  });
}

constexpr Kernels kCpuKernels{&pairwise_cpu, &aligned_cpu, &aligned_backward_cpu};

}  // namespace

TORCH_LIBRARY_IMPL(cvops, CPU, m) { register_ops<kCpuKernels>(m); }

}  // namespace cvops::boxes
