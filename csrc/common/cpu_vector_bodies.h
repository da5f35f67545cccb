// Vector helpers of the per-level CPU bodies (common/cpu_levels.h): included by a family's bodies
// header inside its CVOPS_CPU_NS namespace, so no include guard (it is compiled once per level).
// The including .cpp includes <immintrin.h> and <cmath> at file scope.

// Vectors of Bytes bytes (GCC's vector extension): 64 (one zmm) at the AVX-512 level, 32 (one ymm
// at AVX2, two xmm at baseline) otherwise and for outputs narrower than 64 bytes. The width changes
// the instruction count, not the sums: each lane adds the same products in the same order.
template <typename T, int Bytes>
struct VecOf {
  typedef T type __attribute__((vector_size(Bytes)));
};
#if CVOPS_CPU_AVX512
constexpr int kWideBytes = 64;
#else
constexpr int kWideBytes = 32;
#endif

// c + a·b rounded once, lane by lane: the FMA instruction at the AVX2 and AVX-512 levels, std::fma
// (the same bits) at baseline. Sums written with it alone give the same bits at every level and on
// every path (vector tile or single element).
template <typename T, typename V>
C10_ALWAYS_INLINE V fused_multiply_add(T a, V b, V c) {
#if CVOPS_CPU_AVX512
  if constexpr (sizeof(V) == 64) {
    if constexpr (sizeof(T) == 4) {
      return reinterpret_cast<V>(_mm512_fmadd_ps(_mm512_set1_ps(a), reinterpret_cast<__m512>(b),
                                                 reinterpret_cast<__m512>(c)));
    } else {
      return reinterpret_cast<V>(_mm512_fmadd_pd(_mm512_set1_pd(a), reinterpret_cast<__m512d>(b),
                                                 reinterpret_cast<__m512d>(c)));
    }
  }
#endif
#if CVOPS_CPU_AVX2
  if constexpr (sizeof(V) == 32) {
    if constexpr (sizeof(T) == 4) {
      return reinterpret_cast<V>(_mm256_fmadd_ps(_mm256_set1_ps(a), reinterpret_cast<__m256>(b),
                                                 reinterpret_cast<__m256>(c)));
    } else {
      return reinterpret_cast<V>(_mm256_fmadd_pd(_mm256_set1_pd(a), reinterpret_cast<__m256d>(b),
                                                 reinterpret_cast<__m256d>(c)));
    }
  }
#endif
  V out;
  for (size_t q = 0; q < sizeof(V) / sizeof(T); ++q) out[q] = std::fma(a, b[q], c[q]);
  return out;
}
