// The plane loops of the xcorr CPU kernels, compiled once per CPU level (common/cpu_levels.h):
// included by xcorr_cpu.cpp only, inside its namespace.
namespace CVOPS_CPU_NS {

#include "common/cpu_vector_bodies.h"

// Loads x's row vector at p into a register (kept there: folded into each FMA as a memory operand,
// it would be loaded again for every output row it feeds, which is what the row walk saves).
template <typename T, typename V>
C10_ALWAYS_INLINE V load_row(const T* p) {
  V row;
  __builtin_memcpy(&row, p, sizeof(V));
#if CVOPS_CPU_AVX2
  asm("" : "+v"(row));
#endif
  return row;
}

// The sums over (k, v, u) of rows i..i+R and NV vectors of columns, the n-th starting at column
// j + n·step, held in R·NV vector registers across all taps and planes.
// H > 0 (the template height, fixed at compile time): for each tap column v, the H taps are
// broadcast into registers once, and the walk over the R + H − 1 rows of x the tile reads loads
// each row vector once for all the output rows it feeds (tap row u = q − r): (R + H − 1)·NV loads
// per R·H·NV FMAs, where unaligned loads bounded the loop at one a FMA.
// H = 0 (any height h): a broadcast of each tap feeding R·NV FMAs, one row load each.
// Either way each sum takes its terms in (k, v, u) order.
template <int R, int NV, int H, typename T, typename V>
C10_ALWAYS_INLINE void tile_sums(const T* x, int64_t x_stride, int64_t Wp, const T* z,
                                 int64_t z_stride, int64_t h, int64_t w, int64_t planes, int64_t i,
                                 int64_t j, int64_t step, V (&tile)[R][NV]) {
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < NV; ++n) tile[r][n] = V{};
  for (int64_t k = 0; k < planes; ++k) {
    const T* xk = x + k * x_stride + i * Wp + j;
    const T* zk = z + k * z_stride;
    for (int64_t v = 0; v < w; ++v) {
      if constexpr (H > 0) {
        T taps[H];
        for (int u = 0; u < H; ++u) taps[u] = zk[u * w + v];
        for (int q = 0; q < R + H - 1; ++q) {
          V row[NV];
          for (int n = 0; n < NV; ++n) row[n] = load_row<T, V>(xk + q * Wp + v + n * step);
          for (int r = 0; r < R; ++r) {
            if (q - r < 0 || q - r >= H) continue;
            for (int n = 0; n < NV; ++n)
              tile[r][n] = fused_multiply_add(taps[q - r], row[n], tile[r][n]);
          }
        }
      } else {
        for (int64_t u = 0; u < h; ++u) {
          const T tap = zk[u * w + v];
          for (int r = 0; r < R; ++r) {
            for (int n = 0; n < NV; ++n) {
              V row;
              __builtin_memcpy(&row, xk + (r + u) * Wp + v + n * step, sizeof(V));
              tile[r][n] = fused_multiply_add(tap, row, tile[r][n]);
            }
          }
        }
      }
    }
  }
}

// Rows i..i+R of acc (Wo >= one vector) in tiles of two vectors: adjacent pairs, then for a ragged
// end one pair ending at Wo (overlapping what is done; only the new columns are stored). Two vectors
// a row keep 2·R independent FMA chains in flight, where one vector a row would wait on latency.
template <int R, int H, typename T, typename V>
C10_ALWAYS_INLINE void correlate_rows(const T* x, int64_t x_stride, int64_t Wp, const T* z,
                                      int64_t z_stride, int64_t h, int64_t w, int64_t planes,
                                      T* acc, int64_t Wo, int64_t i) {
  constexpr int kLanes = sizeof(V) / sizeof(T);
  // Stores the columns >= done of the vector of sums starting at (i + r, j).
  auto add = [&](int r, int64_t j, const V& sums, int64_t done) {
    T* dst = acc + (i + r) * Wo + j;
    const int64_t first = done - j;
    if (first <= 0) {
      __builtin_memcpy(dst, &sums, sizeof(V));
      return;
    }
    for (int64_t q = first; q < kLanes; ++q) dst[q] = sums[q];
  };
  auto pair = [&](int64_t j, int64_t step, int64_t done) {
    V tile[R][2];
    tile_sums<R, 2, H, T, V>(x, x_stride, Wp, z, z_stride, h, w, planes, i, j, step, tile);
    for (int r = 0; r < R; ++r) {
      add(r, j, tile[r][0], done);
      add(r, j + step, tile[r][1], done);
    }
  };
  if (Wo == kLanes) {
    V tile[R][1];
    tile_sums<R, 1, H, T, V>(x, x_stride, Wp, z, z_stride, h, w, planes, i, 0, 0, tile);
    for (int r = 0; r < R; ++r) add(r, 0, tile[r][0], 0);
    return;
  }
  int64_t j = 0;
  for (; j + 2 * kLanes <= Wo; j += 2 * kLanes) pair(j, kLanes, j);
  if (j == Wo) return;
  if (Wo >= 2 * kLanes) {
    pair(Wo - 2 * kLanes, kLanes, j);
  } else {
    pair(0, Wo - kLanes, 0);  // kLanes < Wo < 2·kLanes: the second vector overlaps the first
  }
}

// Outputs narrower than one vector: element by element.
template <typename T>
void correlate_elements(const T* x, int64_t x_stride, int64_t Wp, const T* z, int64_t z_stride,
                        int64_t h, int64_t w, int64_t planes, T* acc, int64_t Ho, int64_t Wo) {
  for (int64_t i = 0; i < Ho; ++i) {
    for (int64_t j = 0; j < Wo; ++j) {
      T sum = 0;
      for (int64_t k = 0; k < planes; ++k) {
        const T* xk = x + k * x_stride + i * Wp + j;
        const T* zk = z + k * z_stride;
        for (int64_t v = 0; v < w; ++v)
          for (int64_t u = 0; u < h; ++u) sum = std::fma(zk[u * w + v], xk[u * Wp + v], sum);
      }
      acc[i * Wo + j] = sum;
    }
  }
}

// Rows of acc in tiles of 4, 2 and 1 rows, with vectors of Bytes bytes (Wo >= one vector), for
// templates of height H (0: any).
template <int H, typename T, int Bytes>
void correlate_tiles(const T* x, int64_t x_stride, int64_t Wp, const T* z, int64_t z_stride,
                     int64_t h, int64_t w, int64_t planes, T* acc, int64_t Ho, int64_t Wo) {
  using V = typename VecOf<T, Bytes>::type;
  int64_t i = 0;
  for (; i + 4 <= Ho; i += 4)
    correlate_rows<4, H, T, V>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Wo, i);
  for (; i + 2 <= Ho; i += 2)
    correlate_rows<2, H, T, V>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Wo, i);
  if (i < Ho) correlate_rows<1, H, T, V>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Wo, i);
}

// The tiles with the template height fixed at compile time where it is a common one (SiamRPN++'s
// 5×5 depthwise, SiamFC's 6×6 full correlation).
template <typename T, int Bytes>
void correlate_tiles_of_height(const T* x, int64_t x_stride, int64_t Wp, const T* z,
                               int64_t z_stride, int64_t h, int64_t w, int64_t planes, T* acc,
                               int64_t Ho, int64_t Wo) {
  switch (h) {
    case 5:
      return correlate_tiles<5, T, Bytes>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Ho, Wo);
    case 6:
      return correlate_tiles<6, T, Bytes>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Ho, Wo);
    default:
      return correlate_tiles<0, T, Bytes>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Ho, Wo);
  }
}

// acc[i, j] = Σ_k Σ_{u<h, v<w} z_k[u, v] · x_k[i + u, j + v] over `planes` pairs of planes
// (written, not added: no pass zeroes the output first)
// (x_k = x + k·x_stride with row stride Wp, z_k = z + k·z_stride). Every element sums over
// (k, v, u) in that order, whichever tile computes it, so the bits are the same on every path and
// CPU level.
template <typename T>
void correlate_planes(const T* __restrict x, int64_t x_stride, int64_t Wp, const T* __restrict z,
                      int64_t z_stride, int64_t h, int64_t w, int64_t planes, T* __restrict acc,
                      int64_t Ho, int64_t Wo) {
  if (Wo * static_cast<int64_t>(sizeof(T)) >= kWideBytes)
    return correlate_tiles_of_height<T, kWideBytes>(x, x_stride, Wp, z, z_stride, h, w, planes, acc,
                                                    Ho, Wo);
  if (Wo * static_cast<int64_t>(sizeof(T)) >= 32)
    return correlate_tiles_of_height<T, 32>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Ho,
                                            Wo);
  correlate_elements(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Ho, Wo);
}

// gz [h, w] += Σ_k Σ_{i, j} g_k[i, j] · x_k[i + u, j + v] over `planes` pairs (g_k = g +
// k·g_stride, [Ho, Wo]; x_k = x + k·x_stride, row stride Wp): the template gradient. Each tap sums
// column-wise into lanes [Wo] (vectorised along j), then the lanes in order.
template <typename T>
void template_grad_planes(const T* __restrict g, int64_t g_stride, int64_t Ho, int64_t Wo,
                          const T* __restrict x, int64_t x_stride, int64_t Wp, int64_t h, int64_t w,
                          int64_t planes, T* __restrict lanes, T* __restrict gz) {
  for (int64_t u = 0; u < h; ++u) {
    for (int64_t v = 0; v < w; ++v) {
      T total = 0;
      for (int64_t k = 0; k < planes; ++k) {
        for (int64_t j = 0; j < Wo; ++j) lanes[j] = T(0);
        const T* gk = g + k * g_stride;
        const T* xk = x + k * x_stride + u * Wp + v;
        for (int64_t i = 0; i < Ho; ++i) {
          const T* __restrict gr = gk + i * Wo;
          const T* __restrict r = xk + i * Wp;
          for (int64_t j = 0; j < Wo; ++j) lanes[j] += gr[j] * r[j];
        }
        for (int64_t j = 0; j < Wo; ++j) total += lanes[j];
      }
      gz[u * w + v] += total;
    }
  }
}

}  // namespace CVOPS_CPU_NS
