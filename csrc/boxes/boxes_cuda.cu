// CUDA kernels of the boxes family. Pairwise IoU: one thread per column j of set 2 (its fields
// loaded once, coalesced from the field-major layout) walks kRowsPerBlock rows of set 1, whose
// fields every thread of the block reads from the same addresses (broadcast); writes are
// coalesced along j.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "boxes/boxes.h"
#include "boxes/iou_pair.h"
#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"

namespace cvops::boxes {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = 8;
constexpr int64_t kMaxGridY = 65535;

template <IouKind kind, typename T>
__global__ void __launch_bounds__(kThreads)
    box_iou_kernel(const T* __restrict__ fields1, const T* __restrict__ fields2, int64_t N,
                   int64_t M, T* __restrict__ out) {
  const int64_t set = blockIdx.z;
  const int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (j >= M) return;
  const Box<T> own = box_at_column(fields2 + set * kBoxFields * M, M, j);  // coalesced loads
  for (int64_t r0 = blockIdx.y * int64_t(kRowsPerBlock); r0 < N;
       r0 += int64_t(gridDim.y) * kRowsPerBlock) {
    const int64_t r1 = min(N, r0 + kRowsPerBlock);
    for (int64_t i = r0; i < r1; ++i) {
      out[(set * N + i) * M + j] = pair_value<kind>(box_at(fields1 + set * N * kBoxFields, i), own);
    }
  }
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2,
                        std::string_view kind_name, std::string_view fmt) {
  constexpr const char* op = "box_iou";
  const IouKind kind = parse_kind(op, kind_name);
  c10::cuda::CUDAGuard guard(boxes1.device());
  const auto problem = pairwise_problem(boxes1, boxes2, fmt, op);
  const int64_t sets = problem.fields1.size(0), N = problem.fields1.size(1);
  const int64_t M = problem.fields2.size(1);
  const auto fields2 = problem.fields2.transpose(1, 2).contiguous();  // [sets, 8, M]
  auto out = at::empty({sets, N, M}, problem.fields1.options());
  if (out.numel() > 0) {
    CVOPS_CHECK(sets <= 65535, op, "the CUDA kernel takes at most 65535 broadcast sets, got ",
                sets);
    const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(M, kThreads)),
                    static_cast<unsigned>(std::min(ceil_div<int64_t>(N, kRowsPerBlock), kMaxGridY)),
                    static_cast<unsigned>(sets));
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_box_iou_cuda", [&] {
      const scalar_t* f1 = problem.fields1.const_data_ptr<scalar_t>();
      const scalar_t* f2 = fields2.const_data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      switch (kind) {
        case IouKind::kIou: box_iou_kernel<IouKind::kIou><<<grid, kThreads, 0, stream>>>(f1, f2, N, M, o); break;
        case IouKind::kGiou: box_iou_kernel<IouKind::kGiou><<<grid, kThreads, 0, stream>>>(f1, f2, N, M, o); break;
        case IouKind::kDiou: box_iou_kernel<IouKind::kDiou><<<grid, kThreads, 0, stream>>>(f1, f2, N, M, o); break;
        case IouKind::kCiou: box_iou_kernel<IouKind::kCiou><<<grid, kThreads, 0, stream>>>(f1, f2, N, M, o); break;
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out.view(problem.out_shape).to(boxes1.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(cvops, CUDA, m) { m.impl("box_iou", &box_iou_cuda); }

}  // namespace cvops::boxes
