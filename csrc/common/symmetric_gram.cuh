#pragma once
// The tile machinery of the CUDA symmetric GEMM G = s·F·Fᵀ (common/symmetric_gram_cuda.cu) and of
// the kernels that reduce G in their epilogue instead of writing it (the gram family's style
// loss). G is symmetric, so one block computes one 64×64 tile on or above the diagonal (half the
// FLOPs of a bmm). Accumulation is in opmath (float for half/bfloat16/float, double for double).
// When B·tiles blocks cannot fill the GPU, the reduction over N is split across blocks
// (common/cuda_split.cuh).
#include <cstdint>
#include <limits>

#include "common/checks.h"
#include "common/cuda_split.cuh"
#include "common/cuda_utils.cuh"

namespace cvops::gram_tiles {

constexpr int kTile = 64;             // output tile is kTile × kTile
constexpr int kTileK = 16;            // N-chunk staged in shared memory per step
constexpr int kThreadsSide = 8;       // 8 × 8 threads ...
constexpr int kThreads = kThreadsSide * kThreadsSide;
constexpr int kPerThread = kTile / kThreadsSide;  // ... each computing 8 × 8 outputs
constexpr int kBlocksPerSm = 4;       // blocks wanted per SM before N is split
constexpr int kMinChunk = 256;        // smallest N-range worth a block of its own
constexpr int kMaxSplits = 64;

// The t-th tile of the upper triangle (row-major over pairs ti <= tj) of an nt × nt tile grid.
__device__ __forceinline__ void upper_tile(int t, int nt, int& ti, int& tj) {
  ti = 0;
  while (t >= nt - ti) {
    t -= nt - ti;
    ++ti;
  }
  tj = ti + t;
}

// acc[i][j] += Σ_{k in [k_begin, k_end)} F[row0 + ty + 8i, k] · F[col0 + tx + 8j, k]
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void accumulate_tile(const scalar_t* __restrict__ f, int64_t C,
                                                int64_t N, int64_t row0, int64_t col0,
                                                int64_t k_begin, int64_t k_end,
                                                acc_t (&acc)[kPerThread][kPerThread]) {
  // k-major staging (+1 pad against bank conflicts) so the inner loop reads rows broadcast.
  __shared__ acc_t rows_s[kTileK][kTile + 1];
  __shared__ acc_t cols_s[kTileK][kTile + 1];
  const int tid = threadIdx.x;
  const int tx = tid % kThreadsSide, ty = tid / kThreadsSide;
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    // 64 rows × 16 k per panel; 16 consecutive threads read one row's run of k.
#pragma unroll
    for (int l = 0; l < (kTile * kTileK) / kThreads; ++l) {
      const int e = tid + l * kThreads;
      const int r = e / kTileK, k = e % kTileK;
      const int64_t kk = k0 + k;
      const bool k_ok = kk < k_end;
      const int64_t gr = row0 + r, gc = col0 + r;
      rows_s[k][r] = (k_ok && gr < C) ? static_cast<acc_t>(f[gr * N + kk]) : acc_t(0);
      cols_s[k][r] = (k_ok && gc < C) ? static_cast<acc_t>(f[gc * N + kk]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTileK; ++k) {
      acc_t a[kPerThread], b[kPerThread];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        a[i] = rows_s[k][ty + kThreadsSide * i];
        b[i] = cols_s[k][tx + kThreadsSide * i];
      }
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    __syncthreads();
  }
}

// f(r, c, acc[i][j]) for each of this thread's outputs of the tile at (row0, col0) that lies
// inside the C × C plane, in (i, j) order.
template <typename acc_t, typename F>
__device__ __forceinline__ void for_each_tile_output(const acc_t (&acc)[kPerThread][kPerThread],
                                                     int64_t row0, int64_t col0, int64_t C, F f) {
  const int tx = threadIdx.x % kThreadsSide, ty = threadIdx.x / kThreadsSide;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t r = row0 + ty + kThreadsSide * i;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t c = col0 + tx + kThreadsSide * j;
      if (r < C && c < C) f(r, c, acc[i][j]);
    }
  }
}

struct Launch {
  int tiles_per_side;
  int64_t tiles;    // upper-triangle tiles per sample
  int splits;       // blocks along N
  int64_t k_chunk;  // N-range of one split, a multiple of kTileK
};

// Tiles of F [batch, channels, points]; N is split only when batch·tiles blocks would leave SMs
// idle. `op` names the caller when the grid exceeds what CUDA can launch.
inline Launch plan_launch(const char* op, int64_t batch, int64_t channels, int64_t points) {
  Launch l;
  l.tiles_per_side = static_cast<int>(ceil_div<int64_t>(channels, kTile));
  l.tiles = int64_t(l.tiles_per_side) * (l.tiles_per_side + 1) / 2;
  CVOPS_CHECK(batch <= kMaxGridYZ, op, "the CUDA kernel takes at most ", kMaxGridYZ,
              " samples, got B = ", batch);
  CVOPS_CHECK(l.tiles <= std::numeric_limits<int>::max(), op,
              "too many channels for the CUDA kernel, got C = ", channels);
  // N = 0 still plans one split.
  const SplitPlan split = plan_split(batch * l.tiles, int64_t(kBlocksPerSm) * num_sms(),
                                     std::max<int64_t>(points, 1), kMinChunk, kTileK, kMaxSplits);
  l.splits = static_cast<int>(split.splits);
  l.k_chunk = split.chunk;
  return l;
}

}  // namespace cvops::gram_tiles
