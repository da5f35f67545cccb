#pragma once
// Split reductions: when the independent outputs give too few blocks to fill the GPU, the reduced
// range of each output is cut into chunks over several blocks. Pass 1 writes one partial per
// (output, chunk) to a workspace; pass 2 merges each output's partials in chunk order, so the
// result does not depend on scheduling (no float atomics).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"

namespace cvops {

struct SplitPlan {
  int64_t splits;  // blocks along the reduced range
  int64_t chunk;   // values of the range per split, a multiple of `align`
};

// How to cut a range of `length` values (> 0) when `blocks` independent blocks are to become about
// `wanted_blocks`: at most max_splits splits, none of fewer than min_chunk values unless the range
// is that short, chunks a multiple of `align` (the last one may be shorter).
inline SplitPlan plan_split(int64_t blocks, int64_t wanted_blocks, int64_t length,
                            int64_t min_chunk, int64_t align,
                            int64_t max_splits = std::numeric_limits<int64_t>::max()) {
  const int64_t by_occupancy = ceil_div<int64_t>(wanted_blocks, std::max<int64_t>(blocks, 1));
  const int64_t by_length = std::max<int64_t>(1, length / min_chunk);
  const int64_t splits = std::max<int64_t>(1, std::min({by_occupancy, by_length, max_splits}));
  const int64_t chunk = ceil_div(ceil_div(length, splits), align) * align;
  return {ceil_div(length, chunk), chunk};
}

// Pass 2's share of one thread: the partials load(piece) of pieces first, first + step, ...
// (< splits) merged into `acc` in that order; the block then combines the threads' shares in a
// fixed tree (block_reduce or the caller's own).
template <typename T, typename Load>
__device__ __forceinline__ void merge_pieces(T& acc, int first, int step, int splits,
                                             const Load& load) {
  for (int piece = first; piece < splits; piece += step) combine(acc, load(piece));
}

// Runs a reduction with `splits` chunks per output: fused() when there is one (the block reduces
// and finishes its output itself), else partial(workspace) then merge(workspace) on a workspace
// of `arrays` × `partials` values in `acc_options` (acc_t), which lives until both are queued.
template <typename acc_t, typename Fused, typename Partial, typename Merge>
void run_split(int64_t splits, int64_t arrays, int64_t partials,
               const at::TensorOptions& acc_options, const Fused& fused, const Partial& partial,
               const Merge& merge) {
  if (splits == 1) {
    fused();
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  auto workspace = at::empty({arrays, partials}, acc_options);
  acc_t* data = workspace.data_ptr<acc_t>();
  partial(data);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  merge(data);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cvops
