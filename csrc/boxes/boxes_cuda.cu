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

// Element-wise pairs: one thread per pair (grid-stride).
template <IouKind kind, typename T>
__global__ void box_iou_aligned_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                       BoxFormat fmt, int64_t pairs, T* __restrict__ out) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    out[p] = aligned_value<kind>(a + 4 * p, b + 4 * p, fmt);
  }
}

template <IouKind kind, typename T>
__global__ void box_iou_aligned_backward_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                                const T* __restrict__ g, BoxFormat fmt,
                                                int64_t pairs, T* __restrict__ grad_a,
                                                T* __restrict__ grad_b) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    aligned_grad<kind>(a + 4 * p, b + 4 * p, fmt, g[p], grad_a + 4 * p, grad_b + 4 * p);
  }
}

unsigned elementwise_blocks(int64_t items) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div<int64_t>(items, kThreads), 32 * num_sms())));
}

at::Tensor box_iou_aligned_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2,
                                std::string_view kind_name, std::string_view fmt_name) {
  constexpr const char* op = "box_iou_aligned";
  const IouKind kind = parse_kind(op, kind_name);
  const BoxFormat fmt = parse_format(op, fmt_name);
  c10::cuda::CUDAGuard guard(boxes1.device());
  const auto problem = aligned_problem(boxes1, boxes2, op);
  const int64_t pairs = problem.boxes1.size(0);
  auto out = at::empty({pairs}, problem.boxes1.options());
  if (pairs > 0) {
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_box_iou_aligned_cuda", [&] {
      dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
        box_iou_aligned_kernel<K><<<elementwise_blocks(pairs), kThreads, 0, stream>>>(
            problem.boxes1.const_data_ptr<scalar_t>(), problem.boxes2.const_data_ptr<scalar_t>(),
            fmt, pairs, out.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return out.view(problem.batch).to(boxes1.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> box_iou_aligned_backward_cuda(const at::Tensor& grad,
                                                                 const at::Tensor& boxes1,
                                                                 const at::Tensor& boxes2,
                                                                 std::string_view kind_name,
                                                                 std::string_view fmt_name) {
  constexpr const char* op = "box_iou_aligned_backward";
  const IouKind kind = parse_kind(op, kind_name);
  const BoxFormat fmt = parse_format(op, fmt_name);
  c10::cuda::CUDAGuard guard(boxes1.device());
  const auto problem = aligned_problem(boxes1, boxes2, op);
  const int64_t pairs = problem.boxes1.size(0);
  const auto g = aligned_grad_input(grad, problem, op);
  auto grad1 = at::empty({pairs, 4}, problem.boxes1.options());
  auto grad2 = at::empty({pairs, 4}, problem.boxes1.options());
  if (pairs > 0) {
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(grad1.scalar_type(), "cvops_box_iou_aligned_backward_cuda", [&] {
      dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
        box_iou_aligned_backward_kernel<K><<<elementwise_blocks(pairs), kThreads, 0, stream>>>(
            problem.boxes1.const_data_ptr<scalar_t>(), problem.boxes2.const_data_ptr<scalar_t>(),
            g.const_data_ptr<scalar_t>(), fmt, pairs, grad1.data_ptr<scalar_t>(),
            grad2.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  return aligned_grads_to_inputs(grad1, grad2, boxes1, boxes2, problem);
}

}  // namespace

TORCH_LIBRARY_IMPL(cvops, CUDA, m) {
  m.impl("box_iou", &box_iou_cuda);
  m.impl("box_iou_aligned", &box_iou_aligned_cuda);
  m.impl("box_iou_aligned_backward", &box_iou_aligned_backward_cuda);
}

}  // namespace cvops::boxes
