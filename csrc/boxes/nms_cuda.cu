// CUDA kernels of the NMS ops (nms.h): the same decisions as nms_cpu.cpp, every IoU through
// nms_iou (iou_pair.h) and every area rounded on its own (mul_rn), so CPU and CUDA agree bit for bit.
//
// nms / batched_nms: boxes sorted by (category, score desc, index asc) on the device; the classic
//   bitmask kernel (64×64 tiles, one thread per row, one 64-bit word per (row, column tile), only
//   column tiles >= the row tile, tile pairs whose category ranges cannot meet skipped) and the
//   greedy pass on the device (one block walks the row tiles in order with a `removed` bitset).
//   Rows are processed in chunks whose mask fits kMaskBudgetBytes; a chunk's mask is computed only
//   for rows that earlier chunks left alive. One host synchronisation: the final masked_select.
// multiclass_nms: scores transposed to (image, class) segments, non-candidates keyed −inf, one
//   stable segmented sort, then one block per segment runs the capped greedy lazily (chunks of
//   candidates tested against the survivors so far, then resolved among themselves in order), and
//   a stable sort of the survivors per image gives the top K. No host synchronisation.
// soft_nms: one block of 1024 threads; each step decays the live scores and finds the next best
//   (block-wide argmax, ties to the lower index). One host synchronisation: the pick count.
#include <ATen/Dispatch.h>
#include <ATen/NumericUtils.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "boxes/iou_pair.h"
#include "boxes/nms.h"
#include "common/checks.h"
#include "common/cuda_utils.cuh"

namespace cvops::boxes {
namespace {

using u64 = unsigned long long;  // the type of the 64-bit atomicOr / __popcll / __ffsll
static_assert(sizeof(u64) == sizeof(int64_t), "bitset words are stored in int64 tensors");

constexpr int kThreads = 256;          // element-wise kernels
constexpr int kTile = 64;              // boxes per bitmask word
constexpr int kGreedyThreads = 1024;   // the greedy pass: one block
constexpr int kSoftThreads = 1024;     // soft_nms: one block
constexpr int kSegmentThreads = 256;   // multiclass: one block per segment
constexpr int kSegmentWarps = kSegmentThreads / 32;
// The mask of one chunk of rows: rows × column tiles × 8 bytes stays under this.
constexpr int64_t kMaskBudgetBytes = int64_t(256) << 20;
// The greedy pass keeps `removed` in shared memory up to this many words (40 KiB; with its static
// shared arrays the block stays under the 48 KiB that needs no opt-in), in global memory beyond.
constexpr int64_t kGreedySharedWords = 5120;


u64* words_of(at::Tensor& t) { return static_cast<u64*>(t.data_ptr()); }

template <typename T>
__device__ __forceinline__ T box_area(T x1, T y1, T x2, T y2) {
  return mul_rn(x2 - x1, y2 - y1);
}

// ---- nms / batched_nms -------------------------------------------------------------------------

// Sorted boxes field by field: fields[f * n + p] for f = x1, y1, x2, y2, area of box order[p].
template <typename T>
__global__ void nms_fields_kernel(const T* __restrict__ boxes, const int64_t* __restrict__ order,
                                  int64_t n, T* __restrict__ fields) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x) {
    const T* b = boxes + 4 * order[p];
    const T x1 = b[0], y1 = b[1], x2 = b[2], y2 = b[3];
    fields[p] = x1;
    fields[n + p] = y1;
    fields[2 * n + p] = x2;
    fields[3 * n + p] = y2;
    fields[4 * n + p] = box_area(x1, y1, x2, y2);
  }
}

// The initial `removed` bitset over sorted positions: NaN scores and the padding past n.
template <typename T>
__global__ void nms_init_removed_kernel(const T* __restrict__ sorted_scores, int64_t n,
                                        int64_t tiles, u64* __restrict__ removed) {
  for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < tiles;
       w += int64_t(gridDim.x) * blockDim.x) {
    u64 bits = 0;
    for (int k = 0; k < kTile; ++k) {
      const int64_t p = w * kTile + k;
      if (p >= n || at::_isnan(sorted_scores[p])) bits |= u64(1) << k;
    }
    removed[w] = bits;
  }
}

// With categories (sorted ascending along the processing order): the last column tile whose
// boxes can share a category with row tile rt (column tiles start at rt).
__global__ void nms_tile_last_kernel(const int64_t* __restrict__ categories, int64_t n,
                                     int64_t tiles, int64_t* __restrict__ tile_last) {
  for (int64_t rt = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; rt < tiles;
       rt += int64_t(gridDim.x) * blockDim.x) {
    const int64_t last_category = categories[std::min(rt * kTile + kTile - 1, n - 1)];
    int64_t lo = rt, hi = tiles;  // categories[lo·64] <= last_category; the answer is in [lo, hi)
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (categories[mid * kTile] <= last_category) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    tile_last[rt] = lo;
  }
}

// One block per (row tile, column tile) of a chunk, one thread per row: bit k of the word of row
// r and column tile ct says that box r suppresses box ct·64 + k (a later box of its category). On
// the diagonal only later columns get bits. Rows already removed, tiles below the diagonal and
// tiles past tile_last are not computed (the greedy pass never reads them).
template <typename T>
__global__ void __launch_bounds__(kTile)
    nms_mask_kernel(const T* __restrict__ fields, const int64_t* __restrict__ categories,
                    const int64_t* __restrict__ tile_last, const u64* __restrict__ removed,
                    int64_t n, int64_t row_tile0, int64_t stride, T threshold,
                    u64* __restrict__ mask) {
  const int64_t rt = row_tile0 + blockIdx.y;
  const int64_t ct = row_tile0 + blockIdx.x;  // column tiles are stored from the chunk's first row tile
  // Block-uniform exits, before the barrier.
  if (ct < rt) return;
  if (tile_last != nullptr && ct > tile_last[rt]) return;
  const u64 gone = removed[rt];
  if (gone == ~u64(0)) return;

  __shared__ T cx1[kTile], cy1[kTile], cx2[kTile], cy2[kTile], carea[kTile];
  __shared__ int64_t ccat[kTile];
  const int tid = threadIdx.x;
  const int64_t col0 = ct * kTile;
  const int cols = static_cast<int>(std::min<int64_t>(kTile, n - col0));
  if (tid < cols) {
    const int64_t j = col0 + tid;
    cx1[tid] = fields[j];
    cy1[tid] = fields[n + j];
    cx2[tid] = fields[2 * n + j];
    cy2[tid] = fields[3 * n + j];
    carea[tid] = fields[4 * n + j];
    ccat[tid] = categories != nullptr ? categories[j] : 0;
  }
  __syncthreads();

  const int64_t row = rt * kTile + tid;
  if (row >= n || ((gone >> tid) & 1)) return;
  const T x1 = fields[row], y1 = fields[n + row], x2 = fields[2 * n + row];
  const T y2 = fields[3 * n + row], area = fields[4 * n + row];
  const int64_t category = categories != nullptr ? categories[row] : 0;
  u64 bits = 0;
  for (int k = ct == rt ? tid + 1 : 0; k < cols; ++k) {
    if (ccat[k] == category &&
        nms_iou(x1, y1, x2, y2, area, cx1[k], cy1[k], cx2[k], cy2[k], carea[k]) > threshold) {
      bits |= u64(1) << k;
    }
  }
  mask[(row - row_tile0 * kTile) * stride + (ct - row_tile0)] = bits;
}

// The greedy pass over the row tiles [row_tile0, row_tile1) of a chunk, one block. Per tile, warp
// 0 resolves the 64 rows in order from the diagonal words (only rows whose diagonal word is not
// zero can change anything), then the whole block ORs the kept rows' words into `removed`.
// removed_global holds every tile's word; words before row_tile0 are final and not touched.
template <bool kShared>
__global__ void __launch_bounds__(kGreedyThreads)
    nms_greedy_kernel(const u64* __restrict__ mask, const int64_t* __restrict__ tile_last,
                      int64_t row_tile0, int64_t row_tile1, int64_t tiles, int64_t stride,
                      u64* removed_global) {
  extern __shared__ u64 removed_shared[];  // kShared: words [row_tile0, tiles)
  __shared__ u64 diag[kTile];
  __shared__ int kept_rows[kTile];
  __shared__ int kept_count;
  const int tid = threadIdx.x;
  const int64_t words = tiles - row_tile0;
  // Word t lives at removed[t - row_tile0] (shared or global: atomicOr takes either).
  u64* removed = kShared ? removed_shared : removed_global + row_tile0;
  if (kShared) {
    for (int64_t w = tid; w < words; w += blockDim.x) removed[w] = removed_global[row_tile0 + w];
    __syncthreads();
  }

  for (int64_t i = row_tile0; i < row_tile1; ++i) {
    const int64_t row0 = (i - row_tile0) * kTile;  // first mask row of tile i
    const int64_t diag_col = i - row_tile0;        // its diagonal column in the mask
    if (tid < 32) {
      const int lane = tid;
      u64 cur = *static_cast<volatile u64*>(&removed[diag_col]);
      const u64 d_lo = ((cur >> lane) & 1) ? 0 : mask[(row0 + lane) * stride + diag_col];
      const u64 d_hi = ((cur >> (lane + 32)) & 1) ? 0 : mask[(row0 + lane + 32) * stride + diag_col];
      diag[lane] = d_lo;
      diag[lane + 32] = d_hi;
      const u64 nonzero = u64(__ballot_sync(0xffffffffu, d_lo != 0)) |
                          (u64(__ballot_sync(0xffffffffu, d_hi != 0)) << 32);
      __syncwarp();
      // In order: the lowest row still alive with a non-zero word is kept (every earlier row
      // that could remove it has been applied) and removes its later overlaps.
      u64 todo = nonzero & ~cur;
      while (todo != 0) {
        const int r = __ffsll(static_cast<long long>(todo)) - 1;
        cur |= diag[r];
        todo &= ~cur & ~((u64(2) << r) - 1);  // rows after r still alive
      }
      const u64 keep = ~cur;
      if (lane == 0) {
        removed[diag_col] = cur;
        kept_count = __popcll(keep);
      }
      if ((keep >> lane) & 1) kept_rows[__popcll(keep & ((u64(1) << lane) - 1))] = lane;
      if ((keep >> (lane + 32)) & 1) {
        kept_rows[__popcll(keep & ((u64(1) << (lane + 32)) - 1))] = lane + 32;
      }
    }
    __syncthreads();
    const int kept = kept_count;
    const int64_t last = tile_last != nullptr ? tile_last[i] : tiles - 1;
    const int64_t columns = last - i;  // column tiles i + 1 .. last
    if (kept > 0 && columns > 0) {
      if (columns >= kGreedyThreads) {
        // A thread per column tile, all kept rows (independent loads).
        for (int64_t t = i + 1 + tid; t <= last; t += kGreedyThreads) {
          u64 acc = 0;
#pragma unroll 4
          for (int k = 0; k < kept; ++k) acc |= mask[(row0 + kept_rows[k]) * stride + (t - row_tile0)];
          if (acc != 0) atomicOr(&removed[t - row_tile0], acc);
        }
      } else {
        // `parts` threads per column tile, each a strided share of the kept rows.
        const int cols = static_cast<int>(columns);
        const int parts = kGreedyThreads / cols;
        const int part = tid / cols;
        const int64_t t = i + 1 + (tid - part * cols);
        if (part < parts) {
          u64 acc = 0;
#pragma unroll 4
          for (int k = part; k < kept; k += parts) {
            acc |= mask[(row0 + kept_rows[k]) * stride + (t - row_tile0)];
          }
          if (acc != 0) atomicOr(&removed[t - row_tile0], acc);
        }
      }
    }
    __syncthreads();
  }

  if (kShared) {
    for (int64_t w = tid; w < words; w += blockDim.x) removed_global[row_tile0 + w] = removed[w];
  }
}

// keep[p] (or keep[order[p]]) = sorted position p survived.
__global__ void nms_keep_kernel(const u64* __restrict__ removed, const int64_t* __restrict__ order,
                                int64_t n, bool* __restrict__ keep) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x) {
    const bool kept = ((removed[p / kTile] >> (p % kTile)) & 1) == 0;
    keep[order != nullptr ? order[p] : p] = kept;
  }
}

template <typename T>
at::Tensor nms_typed(const at::Tensor& boxes, const at::Tensor& scores,
                     const at::Tensor& categories, double iou_threshold) {
  const int64_t n = boxes.size(0);
  const T threshold = threshold_in<T>(iou_threshold);
  auto stream = at::cuda::getCurrentCUDAStream();
  const auto long_options = boxes.options().dtype(at::kLong);

  // Processing order: score desc, ties lower index (torch puts NaN first: those are removed).
  auto [sorted_scores, by_score] = at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  at::Tensor order = by_score, sorted_categories;
  if (categories.defined()) {  // then grouped by category, each group keeping that order
    auto [grouped, perm] = at::sort(categories.index_select(0, by_score), /*stable=*/true,
                                    /*dim=*/0, /*descending=*/false);
    sorted_categories = grouped;
    order = by_score.index_select(0, perm);
    sorted_scores = sorted_scores.index_select(0, perm);
  }

  const int64_t tiles = ceil_div<int64_t>(n, kTile);
  auto fields = at::empty({5, n}, boxes.options());
  auto removed = at::empty({tiles}, long_options);
  nms_fields_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(
      boxes.const_data_ptr<T>(), order.const_data_ptr<int64_t>(), n, fields.data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  nms_init_removed_kernel<T><<<grid_stride_blocks(tiles, kThreads), kThreads, 0, stream>>>(
      sorted_scores.const_data_ptr<T>(), n, tiles, words_of(removed));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor tile_last;
  const int64_t* tile_last_ptr = nullptr;
  const int64_t* categories_ptr = nullptr;
  if (categories.defined()) {
    tile_last = at::empty({tiles}, long_options);
    nms_tile_last_kernel<<<grid_stride_blocks(tiles, kThreads), kThreads, 0, stream>>>(
        sorted_categories.const_data_ptr<int64_t>(), n, tiles, tile_last.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    tile_last_ptr = tile_last.const_data_ptr<int64_t>();
    categories_ptr = sorted_categories.const_data_ptr<int64_t>();
  }

  // Chunks of row tiles whose mask (rows × column tiles words) fits the budget. chunk_tiles <=
  // min(tiles, 2^19 / tiles) <= 724, so the grid's y extent is always valid.
  const int64_t chunk_tiles = std::clamp<int64_t>(
      kMaskBudgetBytes / (tiles * kTile * int64_t(sizeof(u64))), 1, tiles);
  auto mask = at::empty({chunk_tiles * kTile * tiles}, long_options);
  for (int64_t row_tile0 = 0; row_tile0 < tiles; row_tile0 += chunk_tiles) {
    const int64_t row_tile1 = std::min(tiles, row_tile0 + chunk_tiles);
    const int64_t stride = tiles - row_tile0;  // column tiles row_tile0 .. tiles - 1
    const dim3 grid(static_cast<unsigned>(stride), static_cast<unsigned>(row_tile1 - row_tile0));
    nms_mask_kernel<T><<<grid, kTile, 0, stream>>>(
        fields.const_data_ptr<T>(), categories_ptr, tile_last_ptr, words_of(removed), n,
        row_tile0, stride, threshold, words_of(mask));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (stride <= kGreedySharedWords) {
      nms_greedy_kernel<true><<<1, kGreedyThreads, stride * sizeof(u64), stream>>>(
          words_of(mask), tile_last_ptr, row_tile0, row_tile1, tiles, stride, words_of(removed));
    } else {
      nms_greedy_kernel<false><<<1, kGreedyThreads, 0, stream>>>(
          words_of(mask), tile_last_ptr, row_tile0, row_tile1, tiles, stride, words_of(removed));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  // The kept boxes by decreasing score, ties lower index: the one host synchronisation.
  auto keep = at::empty({n}, boxes.options().dtype(at::kBool));
  nms_keep_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(
      words_of(removed), categories.defined() ? order.const_data_ptr<int64_t>() : nullptr, n,
      keep.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (!categories.defined()) return order.masked_select(keep);
  return by_score.masked_select(keep.index_select(0, by_score));  // keep is by box index here
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                    const at::Tensor& categories, double iou_threshold) {
  c10::cuda::CUDAGuard guard(boxes.device());
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_nms_cuda", [&] {
    out = nms_typed<scalar_t>(boxes, scores, categories, iou_threshold);
  });
  return out;
}

// ---- multiclass_nms ----------------------------------------------------------------------------

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
        if (nms_iou(cache[0][k], cache[1][k], cache[2][k], cache[3][k], cache[4][k], x1, y1, x2,
                    y2, area) > threshold) {
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
          if (nms_iou(stream[0][k], stream[1][k], stream[2][k], stream[3][k], stream[4][k], x1,
                      y1, x2, y2, area) > threshold) {
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
        if (nms_iou(cand[0][first], cand[1][first], cand[2][first], cand[3][first],
                    cand[4][first], x1, y1, x2, y2, area) > threshold) {
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
                      const MulticlassOptions& options, at::Tensor& scores_out,
                      at::Tensor& classes, at::Tensor& indices, at::Tensor& num_valid) {
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
      order.defined() ? order.const_data_ptr<int64_t>() : nullptr,
      total.const_data_ptr<int64_t>(), B, entries, N, K, scores_out.data_ptr<T>(),
      classes.data_ptr<int64_t>(), indices.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void multiclass_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                     const MulticlassOptions& options, at::Tensor& scores_out,
                     at::Tensor& classes, at::Tensor& indices, at::Tensor& num_valid) {
  c10::cuda::CUDAGuard guard(boxes.device());
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_multiclass_nms_cuda", [&] {
    multiclass_typed<scalar_t>(boxes, scores, options, scores_out, classes, indices, num_valid);
  });
}

// ---- soft_nms ----------------------------------------------------------------------------------

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
      const T iou = nms_iou(ax1, ay1, ax2, ay2, a_area, bx1, by1, bx2, by2,
                            box_area(bx1, by1, bx2, by2));
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

std::tuple<at::Tensor, at::Tensor> soft_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                                                 const SoftNmsOptions& options) {
  c10::cuda::CUDAGuard guard(boxes.device());
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_soft_nms_cuda", [&] {
    out = soft_typed<scalar_t>(boxes, scores, options);
  });
  return out;
}

constexpr NmsKernels kCudaNmsKernels{&nms_cuda, &multiclass_cuda, &soft_nms_cuda};
}  // namespace
TORCH_LIBRARY_IMPL(cvops, CUDA, m) { register_nms_ops<kCudaNmsKernels>(m); }

}  // namespace cvops::boxes
