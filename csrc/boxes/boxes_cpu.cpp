// CPU kernels of the boxes family. Pairwise IoU: the per-box quantities (corners, area, centre,
// atan(w/h)) are computed once, set 2 is laid out field by field, and each row of the output is
// one branch-free loop over set 2 that the compiler vectorises, at the CPU level chosen at load.
#include <ATen/Parallel.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>

#include "boxes/boxes.h"
#include "boxes/iou_pair.h"
#include "common/cpu_levels.h"
#include "common/dispatch.h"
#include "common/loop_table.h"

namespace cvops::boxes {
namespace {

constexpr int64_t kRowsPerTask = 16;
#define CVOPS_CPU_BODIES "boxes/boxes_cpu_bodies.h"
#include "common/cpu_levels_compile.h"

void pairwise_cpu(const at::Tensor& fields1, const at::Tensor& fields2, IouKind kind,
                  const IouEps& eps, at::Tensor& out) {
  const int64_t sets = fields1.size(0), N = fields1.size(1), M = fields2.size(2);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_box_iou_cpu", [&] {
    const scalar_t* a = fields1.const_data_ptr<scalar_t>();
    const scalar_t* b = fields2.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const auto e = eps_in<scalar_t>(eps);
    const auto rows_of_level = CVOPS_CPU_SELECT(iou_rows<scalar_t>);
    const int64_t tasks_per_set = (N + kRowsPerTask - 1) / kRowsPerTask;
    at::parallel_for(0, sets * tasks_per_set, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t set = t / tasks_per_set, r0 = (t % tasks_per_set) * kRowsPerTask;
        const int64_t rows = std::min(kRowsPerTask, N - r0);
        rows_of_level(a + (set * N + r0) * kBoxFields, rows, b + set * kBoxFields * M, M, kind, e,
                      o + (set * N + r0) * M);
      }
    });
  });
}

constexpr int64_t kPairsPerTask = 2048;

void aligned_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, IouKind kind, BoxFormat fmt,
                 const IouEps& eps, at::Tensor& out) {
  const int64_t pairs = boxes1.size(0);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_box_iou_aligned_cpu", [&] {
    const scalar_t* a = boxes1.const_data_ptr<scalar_t>();
    const scalar_t* b = boxes2.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const auto e = eps_in<scalar_t>(eps);
    dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
      at::parallel_for(0, pairs, kPairsPerTask, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) o[p] = aligned_value<K>(a + 4 * p, b + 4 * p, fmt, e);
      });
    });
  });
}

void aligned_backward_cpu(const at::Tensor& grad, const at::Tensor& boxes1,
                          const at::Tensor& boxes2, IouKind kind, BoxFormat fmt, const IouEps& eps,
                          at::Tensor& grad1, at::Tensor& grad2) {
  const int64_t pairs = boxes1.size(0);
  AT_DISPATCH_FLOATING_TYPES(grad1.scalar_type(), "cvops_box_iou_aligned_backward_cpu", [&] {
    const scalar_t* a = boxes1.const_data_ptr<scalar_t>();
    const scalar_t* b = boxes2.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* ga = grad1.data_ptr<scalar_t>();
    scalar_t* gb = grad2.data_ptr<scalar_t>();
    const auto e = eps_in<scalar_t>(eps);
    dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
      at::parallel_for(0, pairs, kPairsPerTask, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          aligned_grad<K>(a + 4 * p, b + 4 * p, fmt, e, g[p], ga + 4 * p, gb + 4 * p);
        }
      });
    });
  });
}

constexpr Loops kCpuLoops{&pairwise_cpu, &aligned_cpu, &aligned_backward_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(boxes_loops, kCpu, kCpuLoops);

}  // namespace cvops::boxes
