// CUDA loops of the nms family (nms.h): the same decisions as nms_cpu.cpp, every IoU through
// nms_iou (nms.h) and every area rounded on its own (mul_rn), so CPU and CUDA agree bit for bit.
// This file: nms / batched_nms, and the family's loop table entry; multiclass_nms and soft_nms are
// in multiclass_nms_cuda.cuh and soft_nms_cuda.cuh.
//
// nms / batched_nms: boxes sorted by (category, score desc, index asc) on the device; the classic
//   bitmask kernel (64×64 tiles, one thread per row, one 64-bit word per (row, column tile), only
//   column tiles >= the row tile, tile pairs whose category ranges cannot meet skipped) and the
//   greedy pass on the device (one block walks the row tiles in order with a `removed` bitset).
//   Rows are processed in chunks whose mask fits kMaskBudgetBytes; a chunk's mask is computed only
//   for rows that earlier chunks left alive. One host synchronisation: the final masked_select.
#include <ATen/Dispatch.h>
#include <ATen/NumericUtils.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda_utils.cuh"
#include "common/loop_table.h"
#include "nms/multiclass_nms_cuda.cuh"
#include "nms/nms.h"
#include "nms/nms_cuda.cuh"
#include "nms/soft_nms_cuda.cuh"

namespace cvops::nms {
namespace {

using u64 = unsigned long long;  // the type of the 64-bit atomicOr / __popcll / __ffsll
static_assert(sizeof(u64) == sizeof(int64_t), "bitset words are stored in int64 tensors");

constexpr int kTile = 64;              // boxes per bitmask word
constexpr int kGreedyThreads = 1024;   // the greedy pass: one block
// The mask of one chunk of rows: rows × column tiles × 8 bytes stays under this.
constexpr int64_t kMaskBudgetBytes = int64_t(256) << 20;
// The greedy pass keeps `removed` in shared memory up to this many words (40 KiB; with its static
// shared arrays the block stays under the 48 KiB that needs no opt-in), in global memory beyond.
constexpr int64_t kGreedySharedWords = 5120;

u64* words_of(at::Tensor& t) { return static_cast<u64*>(t.data_ptr()); }

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
  const int64_t ct =
      row_tile0 + blockIdx.x;  // column tiles are stored from the chunk's first row tile
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
    const int64_t diag_col = i - row_tile0;  // its diagonal column in the mask
    if (tid < 32) {
      const int lane = tid;
      u64 cur = *static_cast<volatile u64*>(&removed[diag_col]);
      const u64 d_lo = ((cur >> lane) & 1) ? 0 : mask[(row0 + lane) * stride + diag_col];
      const u64 d_hi =
          ((cur >> (lane + 32)) & 1) ? 0 : mask[(row0 + lane + 32) * stride + diag_col];
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
          for (int k = 0; k < kept; ++k)
            acc |= mask[(row0 + kept_rows[k]) * stride + (t - row_tile0)];
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
  auto [sorted_scores, by_score] =
      at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true);
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
  const int64_t chunk_tiles =
      std::clamp<int64_t>(kMaskBudgetBytes / (tiles * kTile * int64_t(sizeof(u64))), 1, tiles);
  auto mask = at::empty({chunk_tiles * kTile * tiles}, long_options);
  for (int64_t row_tile0 = 0; row_tile0 < tiles; row_tile0 += chunk_tiles) {
    const int64_t row_tile1 = std::min(tiles, row_tile0 + chunk_tiles);
    const int64_t stride = tiles - row_tile0;  // column tiles row_tile0 .. tiles - 1
    const dim3 grid(static_cast<unsigned>(stride), static_cast<unsigned>(row_tile1 - row_tile0));
    nms_mask_kernel<T><<<grid, kTile, 0, stream>>>(fields.const_data_ptr<T>(), categories_ptr,
                                                   tile_last_ptr, words_of(removed), n, row_tile0,
                                                   stride, threshold, words_of(mask));
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

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& categories,
                    double iou_threshold) {
  c10::cuda::CUDAGuard guard(boxes.device());
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_nms_cuda", [&] {
    out = nms_typed<scalar_t>(boxes, scores, categories, iou_threshold);
  });
  return out;
}

constexpr Loops kCudaLoops{&nms_cuda, &multiclass_cuda, &soft_nms_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(nms_loops, kCuda, kCudaLoops);

}  // namespace cvops::nms
