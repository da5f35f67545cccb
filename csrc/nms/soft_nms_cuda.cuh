#pragma once
// soft_nms on CUDA: one block of 1024 threads; each step decays the live scores and finds the next
// best (block-wide argmax, ties to the lower index). One host synchronisation: the pick count.
// Every IoU goes through nms_iou (nms.h), as on the CPU. Included by nms_cuda.cu.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "common/cuda_utils.cuh"
#include "nms/nms.h"
#include "nms/nms_cuda.cuh"

namespace cvops::nms {

constexpr int kSoftThreads = 1024;  // one block

// (s2, p2) comes before (s1, p1): a higher score, ties the lower index; p < 0 is "none".
template <typename T>
__device__ __forceinline__ bool soft_before(T s2, int64_t p2, T s1, int64_t p1) {
  return p2 >= 0 && (p1 < 0 || s2 > s1 || (s2 == s1 && p2 < p1));
}

// Block-wide best (score, index) over every thread's candidate; the result is the same in every
// thread. Starts and ends with the block in step (its shared slots are reused only after a barrier).
template <typename T>
__device__ void soft_block_best(T& s, int64_t& p, T* warp_s, long long* warp_p, T* best_s,
                                long long* best_p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  long long q = p;
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T os = __shfl_down_sync(0xffffffffu, s, offset);
    const long long oq = __shfl_down_sync(0xffffffffu, q, offset);
    if (soft_before(os, static_cast<int64_t>(oq), s, static_cast<int64_t>(q))) s = os, q = oq;
  }
  if (lane == 0) warp_s[warp] = s, warp_p[warp] = q;
  __syncthreads();
  if (warp == 0) {
    constexpr int kWarps = kSoftThreads / 32;
    s = lane < kWarps ? warp_s[lane] : T(0);
    q = lane < kWarps ? warp_p[lane] : -1;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const T os = __shfl_down_sync(0xffffffffu, s, offset);
      const long long oq = __shfl_down_sync(0xffffffffu, q, offset);
      if (soft_before(os, static_cast<int64_t>(oq), s, static_cast<int64_t>(q))) s = os, q = oq;
    }
    if (lane == 0) *best_s = s, *best_p = q;
  }
  __syncthreads();
  s = *best_s;
  p = static_cast<int64_t>(*best_p);
}

// One block. work: the live scores (in: the input scores; a picked box gets NaN, a decayed one its
// new score; a box is live while its score >= score_threshold, compared in double).
template <typename T>
__global__ void __launch_bounds__(kSoftThreads)
    soft_nms_kernel(const T* __restrict__ boxes, int64_t n, T* __restrict__ work,
                    double score_threshold, T iou_threshold, T sigma, bool gaussian,
                    int64_t* __restrict__ out_index, T* __restrict__ out_score,
                    int64_t* __restrict__ out_count) {
  static_assert(kSoftThreads <= 32 * 32, "one warp reduces the warps' results");
  __shared__ T warp_s[kSoftThreads / 32];
  __shared__ long long warp_p[kSoftThreads / 32];
  __shared__ T best_s;
  __shared__ long long best_p;
  auto alive = [score_threshold](T s) { return static_cast<double>(s) >= score_threshold; };
  const int tid = threadIdx.x;

  T s_best = 0;
  int64_t p_best = -1;
  for (int64_t p = tid; p < n; p += kSoftThreads) {  // increasing p: ties keep the first
    const T s = work[p];
    if (alive(s) && (p_best < 0 || s > s_best)) s_best = s, p_best = p;
  }
  int64_t count = 0;
  while (true) {
    soft_block_best(s_best, p_best, warp_s, warp_p, &best_s, &best_p);
    if (p_best < 0) break;  // uniform
    const int64_t picked = p_best;
    if (tid == 0) out_index[count] = picked, out_score[count] = s_best;
    ++count;
    const T* a = boxes + 4 * picked;
    const T ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3];
    const T a_area = box_area(ax1, ay1, ax2, ay2);
    s_best = 0;
    p_best = -1;
    for (int64_t p = tid; p < n; p += kSoftThreads) {
      T s = work[p];
      if (!alive(s)) continue;
      if (p == picked) {
        work[p] = std::numeric_limits<T>::quiet_NaN();
        continue;
      }
      const T* b = boxes + 4 * p;
      const T bx1 = b[0], by1 = b[1], bx2 = b[2], by2 = b[3];
      const T iou =
          nms_iou(ax1, ay1, ax2, ay2, a_area, bx1, by1, bx2, by2, box_area(bx1, by1, bx2, by2));
      if (gaussian) {
        if (iou > T(0)) s *= std::exp(-(iou * iou) / sigma);  // exp(−0) = 1: skipping is exact
      } else if (iou > iou_threshold) {
        s *= T(1) - iou;
      }
      work[p] = s;
      if (alive(s) && (p_best < 0 || s > s_best)) s_best = s, p_best = p;
    }
  }
  if (tid == 0) *out_count = count;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> soft_typed(const at::Tensor& boxes, const at::Tensor& scores,
                                              const SoftNmsOptions& options) {
  const int64_t n = boxes.size(0);
  auto stream = at::cuda::getCurrentCUDAStream();
  auto work = scores.clone();
  auto out_index = at::empty({n}, boxes.options().dtype(at::kLong));
  auto out_score = at::empty({n}, scores.options());
  auto out_count = at::zeros({1}, boxes.options().dtype(at::kLong));
  soft_nms_kernel<T><<<1, kSoftThreads, 0, stream>>>(
      boxes.const_data_ptr<T>(), n, work.data_ptr<T>(), options.score_threshold,
      threshold_in<T>(options.iou_threshold), static_cast<T>(options.sigma),
      options.method == SoftNmsMethod::kGaussian, out_index.data_ptr<int64_t>(),
      out_score.data_ptr<T>(), out_count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t k = out_count.item<int64_t>();  // the one host synchronisation
  return {out_index.slice(0, 0, k), out_score.slice(0, 0, k)};
}

inline std::tuple<at::Tensor, at::Tensor> soft_nms_cuda(const at::Tensor& boxes,
                                                        const at::Tensor& scores,
                                                        const SoftNmsOptions& options) {
  c10::cuda::CUDAGuard guard(boxes.device());
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_soft_nms_cuda",
                             [&] { out = soft_typed<scalar_t>(boxes, scores, options); });
  return out;
}

}  // namespace cvops::nms
