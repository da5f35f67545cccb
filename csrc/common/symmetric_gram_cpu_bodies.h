// The mirror of the upper triangle, compiled once per CPU level (cpu_levels.h): included by
// symmetric_gram_cpu.cpp only, inside its namespace.
namespace CVOPS_CPU_NS {

// g[i, j] = g[j, i] for i > j over one C × C plane, block by block so both sides stay in cache.
template <typename T>
void mirror_upper_to_lower(T* g, int64_t C) {
  for (int64_t r0 = 0; r0 < C; r0 += kMirrorBlock) {
    const int64_t r1 = std::min(C, r0 + kMirrorBlock);
    for (int64_t c0 = 0; c0 < r1; c0 += kMirrorBlock) {
      const int64_t c1 = std::min(c0 + kMirrorBlock, r1);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < std::min(c1, r); ++c) g[r * C + c] = g[c * C + r];
      }
    }
  }
}

#if CVOPS_CPU_AVX2
// dst[j, i] = src[i, j] for an 8 × 8 float block (the classic unpack/shuffle/permute transpose).
inline void transpose_8x8(const float* src, float* dst, int64_t ld) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// The float mirror in 8 × 8 blocks below the diagonal; the diagonal blocks and the ragged edge
// (C not a multiple of 8) go through the scalar loop.
inline void mirror_upper_to_lower_avx2(float* g, int64_t C) {
  const int64_t full = C / 8 * 8;
  for (int64_t r0 = 8; r0 < full; r0 += 8) {
    for (int64_t c0 = 0; c0 < r0; c0 += 8) transpose_8x8(g + c0 * C + r0, g + r0 * C + c0, C);
  }
  for (int64_t r = 0; r < C; ++r) {
    const int64_t c_begin = r < full ? r / 8 * 8 : 0;  // diagonal block, or the whole ragged row
    for (int64_t c = c_begin; c < r; ++c) g[r * C + c] = g[c * C + r];
  }
}
#endif

// One plane's mirror: 8 × 8 AVX transposes for float where the level has AVX2.
template <typename T>
void mirror_plane(T* g, int64_t C) {
#if CVOPS_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) return mirror_upper_to_lower_avx2(g, C);
#endif
  mirror_upper_to_lower(g, C);
}

}  // namespace CVOPS_CPU_NS
