// The plane loops of the xcorr CPU kernels, compiled once per CPU level (common/cpu_levels.h):
// included by xcorr_cpu.cpp only, inside its namespace.
namespace CVOPS_CPU_NS {

// 32-byte vectors (GCC's vector extension): one ymm register at the AVX2 and AVX-512 levels (which
// auto-vectorise at 256 bits), two xmm at baseline.
template <typename T>
struct Vec32;
template <>
struct Vec32<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct Vec32<double> {
  typedef double type __attribute__((vector_size(32)));
};

// c + a·b rounded once, lane by lane: the FMA instruction at the AVX2 and AVX-512 levels, std::fma
// (the same bits) at baseline. The correlation sums are all written with it, so every level and
// every path (vector tile or single element) gives the same bits.
template <typename T, typename V = typename Vec32<T>::type>
C10_ALWAYS_INLINE V fused_multiply_add(T a, V b, V c) {
#if CVOPS_CPU_AVX2
  if constexpr (sizeof(T) == 4) {
    return reinterpret_cast<V>(_mm256_fmadd_ps(_mm256_set1_ps(a), reinterpret_cast<__m256>(b),
                                               reinterpret_cast<__m256>(c)));
  } else {
    return reinterpret_cast<V>(_mm256_fmadd_pd(_mm256_set1_pd(a), reinterpret_cast<__m256d>(b),
                                               reinterpret_cast<__m256d>(c)));
  }
#else
  V out;
  for (size_t q = 0; q < sizeof(V) / sizeof(T); ++q) out[q] = std::fma(a, b[q], c[q]);
  return out;
#endif
}

// The sums over (k, u, v) of rows i..i+R, columns j..j+NV·lanes, held in R·NV vector registers
// across all taps and planes, one broadcast of each z tap feeding all of them.
template <int R, int NV, typename T, typename V = typename Vec32<T>::type>
C10_ALWAYS_INLINE void tile_sums(const T* x, int64_t x_stride, int64_t Wp, const T* z,
                                 int64_t z_stride, int64_t h, int64_t w, int64_t planes, int64_t i,
                                 int64_t j, V (&tile)[R][NV]) {
  constexpr int kLanes = sizeof(V) / sizeof(T);
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < NV; ++n) tile[r][n] = V{};
  for (int64_t k = 0; k < planes; ++k) {
    const T* xk = x + k * x_stride + i * Wp + j;
    const T* zk = z + k * z_stride;
    for (int64_t u = 0; u < h; ++u) {
      for (int64_t v = 0; v < w; ++v) {
        const T zv = zk[u * w + v];
        for (int r = 0; r < R; ++r) {
          for (int n = 0; n < NV; ++n) {
            V row;
            __builtin_memcpy(&row, xk + (r + u) * Wp + v + n * kLanes, sizeof(V));
            tile[r][n] = fused_multiply_add(zv, row, tile[r][n]);
          }
        }
      }
    }
  }
}

// Rows i..i+R of acc (Wo >= one vector): two-vector tiles, one-vector tiles, and for the ragged end
// one more vector tile ending at Wo, of which only the columns not yet done are stored.
template <int R, typename T>
C10_ALWAYS_INLINE void correlate_rows(const T* x, int64_t x_stride, int64_t Wp, const T* z,
                                      int64_t z_stride, int64_t h, int64_t w, int64_t planes,
                                      T* acc, int64_t Wo, int64_t i) {
  using V = typename Vec32<T>::type;
  constexpr int kLanes = sizeof(V) / sizeof(T);
  // Stores lanes first_lane.. of sums at (i + r, j).
  auto add = [&](int r, int64_t j, const V& sums, int first_lane) {
    T* dst = acc + (i + r) * Wo + j;
    if (first_lane > 0) {
      for (int q = first_lane; q < kLanes; ++q) dst[q] = sums[q];
      return;
    }
    __builtin_memcpy(dst, &sums, sizeof(V));
  };
  int64_t j = 0;
  for (; j + 2 * kLanes <= Wo; j += 2 * kLanes) {
    V tile[R][2];
    tile_sums<R, 2>(x, x_stride, Wp, z, z_stride, h, w, planes, i, j, tile);
    for (int r = 0; r < R; ++r)
      for (int n = 0; n < 2; ++n) add(r, j + n * kLanes, tile[r][n], 0);
  }
  for (; j + kLanes <= Wo; j += kLanes) {
    V tile[R][1];
    tile_sums<R, 1>(x, x_stride, Wp, z, z_stride, h, w, planes, i, j, tile);
    for (int r = 0; r < R; ++r) add(r, j, tile[r][0], 0);
  }
  if (j < Wo) {
    const int64_t last = Wo - kLanes;
    V tile[R][1];
    tile_sums<R, 1>(x, x_stride, Wp, z, z_stride, h, w, planes, i, last, tile);
    for (int r = 0; r < R; ++r) add(r, last, tile[r][0], static_cast<int>(j - last));
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
        for (int64_t u = 0; u < h; ++u)
          for (int64_t v = 0; v < w; ++v) sum = std::fma(zk[u * w + v], xk[u * Wp + v], sum);
      }
      acc[i * Wo + j] = sum;
    }
  }
}

// acc[i, j] = Σ_k Σ_{u<h, v<w} z_k[u, v] · x_k[i + u, j + v] over `planes` pairs of planes
// (written, not added: no pass zeroes the output first)
// (x_k = x + k·x_stride with row stride Wp, z_k = z + k·z_stride). Every element sums over
// (k, u, v) in that order, whichever tile computes it, so the bits are the same on every path and
// CPU level.
template <typename T>
void correlate_planes(const T* __restrict x, int64_t x_stride, int64_t Wp, const T* __restrict z,
                      int64_t z_stride, int64_t h, int64_t w, int64_t planes, T* __restrict acc,
                      int64_t Ho, int64_t Wo) {
  constexpr int kLanes = sizeof(typename Vec32<T>::type) / sizeof(T);
  if (Wo < kLanes)
    return correlate_elements(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Ho, Wo);
  int64_t i = 0;
  for (; i + 4 <= Ho; i += 4)
    correlate_rows<4>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Wo, i);
  for (; i + 2 <= Ho; i += 2)
    correlate_rows<2>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Wo, i);
  if (i < Ho) correlate_rows<1>(x, x_stride, Wp, z, z_stride, h, w, planes, acc, Wo, i);
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
