// CUDA kernels of the boxes family. Pairwise IoU: one thread per column j of set 2 (its fields
// loaded once, coalesced from the field-major layout) walks kRowsPerBlock rows of set 1, whose
// fields every thread of the block reads from the same addresses (broadcast); writes are
// coalesced along j.
#include <ATen/cuda/CUDAContext.h>

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

template <IouKind kind, typename T>
__global__ void __launch_bounds__(kThreads)
    box_iou_kernel(const T* __restrict__ fields1, const T* __restrict__ fields2, int64_t N,
                   int64_t M, const Eps<T> e, T* __restrict__ out) {
  const int64_t set = blockIdx.z;
  const int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (j >= M) return;
  const Box<T> own = box_at_column(fields2 + set * kBoxFields * M, M, j);  // coalesced loads
  for (int64_t r0 = blockIdx.y * int64_t(kRowsPerBlock); r0 < N;
       r0 += int64_t(gridDim.y) * kRowsPerBlock) {
    const int64_t r1 = min(N, r0 + kRowsPerBlock);
    for (int64_t i = r0; i < r1; ++i) {
      out[(set * N + i) * M + j] =
          pair_value<kind>(box_at(fields1 + set * N * kBoxFields, i), own, e);
    }
  }
}

void pairwise_cuda(const at::Tensor& fields1, const at::Tensor& fields2, IouKind kind,
                   const IouEps& eps, at::Tensor& out) {
  const int64_t sets = fields1.size(0), N = fields1.size(1), M = fields2.size(2);
  CVOPS_CHECK(sets <= kMaxGridYZ, "box_iou", "the CUDA kernel takes at most ", kMaxGridYZ,
              " broadcast sets, got ", sets);
  c10::cuda::CUDAGuard guard(out.device());
  const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(M, kThreads)),
                  static_cast<unsigned>(std::min(ceil_div<int64_t>(N, kRowsPerBlock), kMaxGridYZ)),
                  static_cast<unsigned>(sets));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_box_iou_cuda", [&] {
    dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
      box_iou_kernel<K><<<grid, kThreads, 0, stream>>>(
          fields1.const_data_ptr<scalar_t>(), fields2.const_data_ptr<scalar_t>(), N, M,
          eps_in<scalar_t>(eps), out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

// Element-wise pairs: one thread per pair (grid-stride).
template <IouKind kind, typename T>
__global__ void box_iou_aligned_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                       BoxFormat fmt, const Eps<T> e, int64_t pairs,
                                       T* __restrict__ out) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    out[p] = aligned_value<kind>(a + 4 * p, b + 4 * p, fmt, e);
  }
}

template <IouKind kind, typename T>
__global__ void box_iou_aligned_backward_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                                const T* __restrict__ g, BoxFormat fmt,
                                                const Eps<T> e, int64_t pairs,
                                                T* __restrict__ grad_a, T* __restrict__ grad_b) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    aligned_grad<kind>(a + 4 * p, b + 4 * p, fmt, e, g[p], grad_a + 4 * p, grad_b + 4 * p);
  }
}


void aligned_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, IouKind kind, BoxFormat fmt,
                  const IouEps& eps, at::Tensor& out) {
  const int64_t pairs = boxes1.size(0);
  c10::cuda::CUDAGuard guard(out.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cvops_box_iou_aligned_cuda", [&] {
    dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
      box_iou_aligned_kernel<K><<<grid_stride_blocks(pairs, kThreads), kThreads, 0, stream>>>(
          boxes1.const_data_ptr<scalar_t>(), boxes2.const_data_ptr<scalar_t>(), fmt,
          eps_in<scalar_t>(eps), pairs, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void aligned_backward_cuda(const at::Tensor& grad, const at::Tensor& boxes1,
                           const at::Tensor& boxes2, IouKind kind, BoxFormat fmt, const IouEps& eps,
                           at::Tensor& grad1, at::Tensor& grad2) {
  const int64_t pairs = boxes1.size(0);
  c10::cuda::CUDAGuard guard(grad1.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad1.scalar_type(), "cvops_box_iou_aligned_backward_cuda", [&] {
    dispatch_kind(kind, [&](auto k) {
      constexpr IouKind K = decltype(k)::value;
      box_iou_aligned_backward_kernel<K>
          <<<grid_stride_blocks(pairs, kThreads), kThreads, 0, stream>>>(
              boxes1.const_data_ptr<scalar_t>(), boxes2.const_data_ptr<scalar_t>(),
              grad.const_data_ptr<scalar_t>(), fmt, eps_in<scalar_t>(eps), pairs,
              grad1.data_ptr<scalar_t>(), grad2.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

constexpr Loops kCudaLoops{&pairwise_cuda, &aligned_cuda, &aligned_backward_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(boxes_loops, kCuda, kCudaLoops);

}  // namespace cvops::boxes
