#pragma once
// multiclass_nms on CUDA: scores transposed to (image, class) segments, non-candidates keyed −inf,
// one stable segmented sort, then one block per segment runs the capped greedy lazily (chunks of
// candidates tested against the survivors so far, then resolved among themselves in order), and a
// stable sort of the survivors per image gives the top K. No host synchronisation. Every IoU goes
// through nms_iou (nms.h), so the decisions are the CPU's bit for bit. Included by nms_cuda.cu.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sort.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>

#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "nms/nms.h"
#include "nms/nms_cuda.cuh"

namespace cvops::nms {

constexpr int kSegmentThreads = 256;  // one block per segment
constexpr int kSegmentWarps = kSegmentThreads / 32;

// Non-candidates (score <= threshold in T, or NaN) keyed −inf, so a stable descending sort puts
// the candidates first in order (score desc, position asc) and a candidate is a key > −inf.
template <typename T>
__global__ void candidate_keys_kernel(T* __restrict__ keys, int64_t count, T threshold) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (!(keys[i] > threshold)) keys[i] = -std::numeric_limits<T>::infinity();
  }
}

// Survivors of the greedy pass kept in shared memory (the first kCache of them), and the size of
// the tiles in which the later ones are streamed from global memory. 20 KiB + 10 KiB + the
// candidates' 5·256·sizeof(T) stays under 48 KiB for float and double.
template <typename T>
constexpr int kCache = 20480 / (5 * int(sizeof(T)));
template <typename T>
constexpr int kStream = kCache<T> / 2;

// One block per segment ((image, class), or image when class-agnostic): its sorted candidates in
// chunks of kSegmentThreads, each thread one candidate; a candidate is first tested against the
// survivors so far, then the chunk is resolved in order (the first live candidate survives and
// removes its overlaps among the later ones), until `cap` survivors or the candidates run out.
// Survivor s of segment seg: surv_score / surv_key[seg · cap + s] (key = class · N + box index);
// surv_count[seg] = how many.
template <typename T>
__global__ void __launch_bounds__(kSegmentThreads)
    multiclass_segment_kernel(const T* __restrict__ boxes, const T* __restrict__ keys,
                              const int64_t* __restrict__ positions, int64_t N, int64_t C,
                              int64_t G, int64_t L, bool agnostic, int64_t cap, T threshold,
                              T* surv_score, int64_t* surv_key, int64_t* __restrict__ surv_count) {
  constexpr int kC = kCache<T>, kS = kStream<T>;
  __shared__ T cache[5][kC];
  __shared__ T stream[5][kS];
  __shared__ T cand[5][kSegmentThreads];
  __shared__ unsigned warp_alive[kSegmentWarps];
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();

  const int64_t seg = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t image = agnostic ? seg : seg / C;
  const int64_t seg_class = agnostic ? 0 : seg % C;
  const T* seg_keys = keys + seg * L;
  const int64_t* seg_positions = positions + seg * L;
  T* out_score = surv_score + seg * cap;
  int64_t* out_key = surv_key + seg * cap;
  auto box_of = [&](int64_t key) {
    const int64_t c = key / N, box = key - c * N;
    return boxes + ((image * N + box) * G + (G == 1 ? 0 : c)) * 4;
  };

  int64_t m = 0;  // survivors so far (block-uniform)
  for (int64_t base = 0; base < L && m < cap; base += kSegmentThreads) {
    if (!(seg_keys[base] > kNegInf)) break;  // uniform: the rest are not candidates
    __syncthreads();  // the previous chunk's readers of cand are done
    const int64_t p = base + tid;
    bool alive = false;
    T score = 0, x1 = 0, y1 = 0, x2 = 0, y2 = 0, area = 0;
    int64_t key = 0;
    if (p < L) {
      score = seg_keys[p];
      alive = score > kNegInf;
      if (alive) {
        key = agnostic ? seg_positions[p] : seg_class * N + seg_positions[p];
        const T* b = box_of(key);
        x1 = b[0], y1 = b[1], x2 = b[2], y2 = b[3];
        area = box_area(x1, y1, x2, y2);
      }
    }
    cand[0][tid] = x1, cand[1][tid] = y1, cand[2][tid] = x2, cand[3][tid] = y2;
    cand[4][tid] = area;

    // Against the survivors of earlier chunks: the cached ones, then the rest tile by tile.
    const int cached = static_cast<int>(std::min<int64_t>(m, kC));
    if (alive) {
      for (int k = 0; k < cached; ++k) {
        if (nms_iou(cache[0][k], cache[1][k], cache[2][k], cache[3][k], cache[4][k], x1, y1, x2, y2,
                    area) > threshold) {
          alive = false;
          break;
        }
      }
    }
    for (int64_t s0 = kC; s0 < m; s0 += kS) {
      const int count = static_cast<int>(std::min<int64_t>(kS, m - s0));
      __syncthreads();  // the previous tile is used up
      for (int k = tid; k < count; k += kSegmentThreads) {
        const T* b = box_of(out_key[s0 + k]);
        const T sx1 = b[0], sy1 = b[1], sx2 = b[2], sy2 = b[3];
        stream[0][k] = sx1, stream[1][k] = sy1, stream[2][k] = sx2, stream[3][k] = sy2;
        stream[4][k] = box_area(sx1, sy1, sx2, sy2);
      }
      __syncthreads();
      if (alive) {
        for (int k = 0; k < count; ++k) {
          if (nms_iou(stream[0][k], stream[1][k], stream[2][k], stream[3][k], stream[4][k], x1, y1,
                      x2, y2, area) > threshold) {
            alive = false;
            break;
          }
        }
      }
    }

    // Within the chunk, in order.
    while (true) {
      __syncthreads();  // cand written; the previous round's readers of warp_alive are done
      const unsigned ballot = __ballot_sync(0xffffffffu, alive);
      if (lane == 0) warp_alive[warp] = ballot;
      __syncthreads();
      int first = -1;
      for (int w = 0; w < kSegmentWarps; ++w) {
        const unsigned bits = warp_alive[w];
        if (bits != 0) {
          first = w * 32 + __ffs(static_cast<int>(bits)) - 1;
          break;
        }
      }
      if (first < 0) break;  // uniform
      if (tid == first) {
        alive = false;
        out_score[m] = score;
        out_key[m] = key;
        if (m < kC) {
          cache[0][m] = x1, cache[1][m] = y1, cache[2][m] = x2, cache[3][m] = y2;
          cache[4][m] = area;
        }
      } else if (alive) {  // a later candidate (earlier ones are all dead)
        if (nms_iou(cand[0][first], cand[1][first], cand[2][first], cand[3][first], cand[4][first],
                    x1, y1, x2, y2, area) > threshold) {
          alive = false;
        }
      }
      ++m;
      if (m >= cap) break;  // uniform
    }
  }
  if (tid == 0) surv_count[seg] = m;
}

// Output slot k of image b: entry order[b, k] (or k) of the image's survivors, for k < total[b].
template <typename T>
__global__ void multiclass_output_kernel(const T* __restrict__ surv_score,
                                         const int64_t* __restrict__ surv_key,
                                         const int64_t* __restrict__ order,
                                         const int64_t* __restrict__ total, int64_t B,
                                         int64_t entries, int64_t N, int64_t K,
                                         T* __restrict__ scores_out, int64_t* __restrict__ classes,
                                         int64_t* __restrict__ indices) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < B * K;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = o / K, k = o - b * K;
    if (k >= total[b]) continue;  // padding stays as preallocated
    const int64_t entry = b * entries + (order != nullptr ? order[b * entries + k] : k);
    const int64_t key = surv_key[entry];
    scores_out[o] = surv_score[entry];
    classes[o] = key / N;
    indices[o] = key % N;
  }
}

template <typename T>
void multiclass_typed(const at::Tensor& boxes, const at::Tensor& scores,
                      const MulticlassOptions& options, at::Tensor& scores_out, at::Tensor& classes,
                      at::Tensor& indices, at::Tensor& num_valid) {
  const int64_t B = scores.size(0), N = scores.size(1), C = scores.size(2);
  const int64_t G = boxes.size(2), K = options.max_total;
  const bool agnostic = options.class_agnostic;
  const T iou_threshold = threshold_in<T>(options.iou_threshold);
  const T score_threshold = threshold_in<T>(options.score_threshold);
  auto stream = at::cuda::getCurrentCUDAStream();

  const int64_t per_image = agnostic ? 1 : C;  // segments per image
  const int64_t S = B * per_image;
  const int64_t L = agnostic ? C * N : N;      // candidates per segment at most
  const int64_t cap = std::min(agnostic ? K : options.max_per_class, L);

  CVOPS_CHECK(S <= std::numeric_limits<int32_t>::max(), "multiclass_nms",
              "the CUDA kernel takes at most 2^31 - 1 (image, class) segments, got ", S);
  // Keys [S, L]: (image, class, box) order, i.e. position c·N + n within an image. A fresh buffer
  // (transpose(1, 2).contiguous() would alias `scores` when C == 1 or N == 1, and it is masked in
  // place below).
  auto keys = at::empty({B, C, N}, scores.options());
  keys.copy_(scores.transpose(1, 2));
  candidate_keys_kernel<T><<<grid_stride_blocks(keys.numel(), kThreads), kThreads, 0, stream>>>(
      keys.data_ptr<T>(), keys.numel(), score_threshold);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto [sorted_keys, positions] =
      at::sort(keys.view({S, L}), /*stable=*/true, /*dim=*/1, /*descending=*/true);

  const auto long_options = scores.options().dtype(at::kLong);
  auto surv_score = at::full({S, cap}, -std::numeric_limits<double>::infinity(), scores.options());
  auto surv_key = at::empty({S, cap}, long_options);
  auto surv_count = at::empty({S}, long_options);
  multiclass_segment_kernel<T><<<static_cast<unsigned>(S), kSegmentThreads, 0, stream>>>(
      boxes.const_data_ptr<T>(), sorted_keys.const_data_ptr<T>(),
      positions.const_data_ptr<int64_t>(), N, C, G, L, agnostic, cap, iou_threshold,
      surv_score.data_ptr<T>(), surv_key.data_ptr<int64_t>(), surv_count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Per image: survivors by (score desc, class asc, index asc). The survivors lie in class order,
  // each class's in (score desc, index asc), unused slots −inf: a stable descending sort by score
  // gives that order. Class-agnostic survivors are already in order (and at most K).
  const int64_t entries = per_image * cap;
  at::Tensor order;
  if (!agnostic) {
    order = std::get<1>(at::sort(surv_score.view({B, entries}), /*stable=*/true, /*dim=*/1,
                                 /*descending=*/true));
  }
  auto total = surv_count.view({B, per_image}).sum(1).clamp_max(K);
  num_valid.copy_(total);
  multiclass_output_kernel<T><<<grid_stride_blocks(B * K, kThreads), kThreads, 0, stream>>>(
      surv_score.const_data_ptr<T>(), surv_key.const_data_ptr<int64_t>(),
      order.defined() ? order.const_data_ptr<int64_t>() : nullptr, total.const_data_ptr<int64_t>(),
      B, entries, N, K, scores_out.data_ptr<T>(), classes.data_ptr<int64_t>(),
      indices.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

inline void multiclass_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                            const MulticlassOptions& options, at::Tensor& scores_out,
                            at::Tensor& classes, at::Tensor& indices, at::Tensor& num_valid) {
  c10::cuda::CUDAGuard guard(boxes.device());
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_multiclass_nms_cuda", [&] {
    multiclass_typed<scalar_t>(boxes, scores, options, scores_out, classes, indices, num_valid);
  });
}

}  // namespace cvops::nms
