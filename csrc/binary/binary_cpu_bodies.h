// The bit loops of the binary CPU kernels, compiled once per CPU level (common/cpu_levels.h):
// included by binary_cpu.cpp only, inside its namespace. The XNOR tile counts popcount(x ^ w) with
// VPOPCNTQ at the AVX-512 level, a nibble-table popcount (VPSHUFB, VPSADBW) at AVX2, and scalar
// popcounts at baseline; packing turns comparisons into bits with mask registers / movemask.
namespace CVOPS_CPU_NS {

// sign(v) = +1 (bit 1) where v >= 0: an ordered comparison, so −0.0 gives 1 and NaN gives 0.
// Each predicate gives the bit of value v of channel c (the vector forms: channels c .. c + 7 or
// c + 15 when the channels are contiguous, else channel c for every lane).
template <typename T>
struct SignBit {
  C10_ALWAYS_INLINE bool operator()(T v, int64_t) const { return v >= T(0); }
#if CVOPS_CPU_AVX2
  C10_ALWAYS_INLINE unsigned mask8(__m256 v, int64_t) const {
    return _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ));
  }
#endif
#if CVOPS_CPU_AVX512
  C10_ALWAYS_INLINE unsigned mask16(__m512 v, int64_t) const {
    return _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
  }
  C10_ALWAYS_INLINE __mmask8 kmask8(__m256 v, int64_t) const {
    return _mm256_cmp_ps_mask(v, _mm256_setzero_ps(), _CMP_GE_OQ);
  }
#endif
};

// The straight-through estimator's mask: bit 1 where |v| <= clip (NaN gives 0).
template <typename T>
struct ClipBit {
  T clip;
  C10_ALWAYS_INLINE bool operator()(T v, int64_t) const { return std::abs(v) <= clip; }
#if CVOPS_CPU_AVX2
  C10_ALWAYS_INLINE unsigned mask8(__m256 v, int64_t) const {
    const __m256 magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
    return _mm256_movemask_ps(_mm256_cmp_ps(magnitude, _mm256_set1_ps(float(clip)), _CMP_LE_OQ));
  }
#endif
#if CVOPS_CPU_AVX512
  C10_ALWAYS_INLINE unsigned mask16(__m512 v, int64_t) const {
    return _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(float(clip)), _CMP_LE_OQ);
  }
  C10_ALWAYS_INLINE __mmask8 kmask8(__m256 v, int64_t) const {
    const __m256 magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
    return _mm256_cmp_ps_mask(magnitude, _mm256_set1_ps(float(clip)), _CMP_LE_OQ);
  }
#endif
};

// A folded BatchNorm's sign: bit 1 where low[c] <= v <= high[c] (NaN gives 0). The vector forms
// exist for float only (the callers take them for float only).
template <typename T>
struct IntervalBit {
  const T* low;
  const T* high;
  C10_ALWAYS_INLINE bool operator()(T v, int64_t c) const { return v >= low[c] && v <= high[c]; }
#if CVOPS_CPU_AVX2
  C10_ALWAYS_INLINE unsigned mask8(__m256 v, int64_t c) const {
    const __m256 in = _mm256_and_ps(_mm256_cmp_ps(v, _mm256_loadu_ps(low + c), _CMP_GE_OQ),
                                    _mm256_cmp_ps(v, _mm256_loadu_ps(high + c), _CMP_LE_OQ));
    return _mm256_movemask_ps(in);
  }
#endif
#if CVOPS_CPU_AVX512
  C10_ALWAYS_INLINE unsigned mask16(__m512 v, int64_t c) const {
    const __mmask16 above = _mm512_cmp_ps_mask(v, _mm512_loadu_ps(low + c), _CMP_GE_OQ);
    return _mm512_mask_cmp_ps_mask(above, v, _mm512_loadu_ps(high + c), _CMP_LE_OQ);
  }
  C10_ALWAYS_INLINE __mmask8 kmask8(__m256 v, int64_t c) const {
    const __mmask8 above = _mm256_cmp_ps_mask(v, _mm256_set1_ps(low[c]), _CMP_GE_OQ);
    return _mm256_mask_cmp_ps_mask(above, v, _mm256_set1_ps(high[c]), _CMP_LE_OQ);
  }
#endif
};

// The bits of channels c0 + c, c < n (n <= 64), at x[c * stride], as one word: bit c.
template <typename T, typename Pred>
C10_ALWAYS_INLINE uint64_t pack_word(const T* x, int64_t stride, int64_t c0, int64_t n, Pred pred) {
  uint64_t word = 0;
  int64_t c = 0;
#if CVOPS_CPU_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 1) {
#if CVOPS_CPU_AVX512
      for (; c + 16 <= n; c += 16) {
        word |= uint64_t(pred.mask16(_mm512_loadu_ps(x + c), c0 + c)) << c;
      }
#endif
      for (; c + 8 <= n; c += 8) {
        word |= uint64_t(pred.mask8(_mm256_loadu_ps(x + c), c0 + c)) << c;
      }
    }
  }
#endif
  for (; c < n; ++c) word |= uint64_t(pred(x[c * stride], c0 + c)) << c;
  return word;
}

// x [C, S] with pixels contiguous (stride 1) and channels `cstride` apart: bits [S, words].
// Pixels go in blocks whose words are built channel by channel (the loop over pixels vectorises).
template <typename T, typename Pred>
void pack_channels_strided(const T* x, int64_t C, int64_t S, int64_t cstride, Pred pred,
                           uint64_t* bits) {
  constexpr int64_t kBlock = 256;
  const int64_t words = (C + 63) / 64;
  int64_t s0 = 0;
#if CVOPS_CPU_AVX512
  // 64 pixels at a time, their words in 8 registers: per channel, 8 comparisons into mask
  // registers and 8 masked ORs of the channel's bit.
  if constexpr (std::is_same_v<T, float>) {
    for (; s0 + 64 <= S; s0 += 64) {
      for (int64_t k = 0; k < words; ++k) {
        __m512i acc[8];
        for (int v = 0; v < 8; ++v) acc[v] = _mm512_setzero_si512();
        const int64_t c1 = std::min<int64_t>(64, C - 64 * k);
        for (int64_t c = 0; c < c1; ++c) {
          const __m512i bit = _mm512_set1_epi64(static_cast<int64_t>(uint64_t{1} << c));
          const float* row = x + (64 * k + c) * cstride + s0;
          for (int v = 0; v < 8; ++v) {
            acc[v] = _mm512_mask_or_epi64(
                acc[v], pred.kmask8(_mm256_loadu_ps(row + 8 * v), 64 * k + c), acc[v], bit);
          }
        }
        if (words == 1) {
          for (int v = 0; v < 8; ++v) _mm512_storeu_si512(bits + s0 + 8 * v, acc[v]);
        } else {
          alignas(64) uint64_t lanes[8];
          for (int v = 0; v < 8; ++v) {
            _mm512_store_si512(lanes, acc[v]);
            for (int l = 0; l < 8; ++l) bits[(s0 + 8 * v + l) * words + k] = lanes[l];
          }
        }
      }
    }
  }
#endif
  uint64_t acc[kBlock];
  for (; s0 < S; s0 += kBlock) {
    const int64_t n = std::min(kBlock, S - s0);
    for (int64_t k = 0; k < words; ++k) {
      for (int64_t q = 0; q < n; ++q) acc[q] = 0;
      const int64_t c1 = std::min<int64_t>(64, C - 64 * k);
      for (int64_t c = 0; c < c1; ++c) {
        const T* row = x + (64 * k + c) * cstride + s0;
        for (int64_t q = 0; q < n; ++q) acc[q] |= uint64_t(pred(row[q], 64 * k + c)) << c;
      }
      for (int64_t q = 0; q < n; ++q) bits[(s0 + q) * words + k] = acc[q];
    }
  }
}

// x [S, C] with channels contiguous: bits [S, words].
template <typename T, typename Pred>
void pack_channels_contiguous(const T* x, int64_t C, int64_t S, int64_t sstride, Pred pred,
                              uint64_t* bits) {
  const int64_t words = (C + 63) / 64;
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t k = 0; k < words; ++k) {
      bits[s * words + k] =
          pack_word(x + s * sstride + 64 * k, 1, 64 * k, std::min<int64_t>(64, C - 64 * k), pred);
    }
  }
}

// The XNOR tiles run across filters: a vector holds one word of kLanes filters (the weight is
// transposed to [O / kLanes, kh·kw·Cw, kLanes]), each pixel's word is broadcast against it, and the
// popcounts accumulate lane by lane, so a tile of NP pixels × NV·kLanes filters needs no horizontal
// sums. popcount(v) per 64-bit lane: VPOPCNTQ (AVX-512), a nibble table summed by VPSADBW (AVX2),
// or scalar popcounts (baseline).
#if CVOPS_CPU_AVX512
// 4 pixels × 32 filters: 16 accumulators, and per word 4 filter-vector loads and 4 broadcasts for
// 16 XOR-popcount-adds.
constexpr int kLanes = 8, kTilePixels = 4, kTileVectors = 4;
typedef int64_t Lanes __attribute__((vector_size(64)));
C10_ALWAYS_INLINE Lanes popcount(Lanes v) { return (Lanes)_mm512_popcnt_epi64((__m512i)v); }
#elif CVOPS_CPU_AVX2
constexpr int kLanes = 4, kTilePixels = 3, kTileVectors = 2;
typedef int64_t Lanes __attribute__((vector_size(32)));
C10_ALWAYS_INLINE Lanes popcount(Lanes v) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256((__m256i)v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16((__m256i)v, 4), low);
  const __m256i bytes =
      _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
  return (Lanes)_mm256_sad_epu8(bytes, _mm256_setzero_si256());
}
#else
constexpr int kLanes = 2, kTilePixels = 2, kTileVectors = 2;
typedef int64_t Lanes __attribute__((vector_size(16)));
C10_ALWAYS_INLINE Lanes popcount(Lanes v) {
  Lanes out;
  for (int l = 0; l < kLanes; ++l) out[l] = __builtin_popcountll(static_cast<uint64_t>(v[l]));
  return out;
}
#endif

int lanes() { return kLanes; }

// count[p][v] = Σ_{r < rows, s < segs, q < len} popcount(x[p][r·xr + s·xs + q] ^ w[v][...]) over
// the tile's NP pixels and NV filter vectors, held in registers across every tap.
template <int NP, int NV>
C10_ALWAYS_INLINE void tile_counts(const uint64_t* const (&x)[NP], const int64_t* const (&w)[NV],
                                   const Walk& k, Lanes (&count)[NP][NV]) {
  Lanes acc[NP][NV];
  for (int p = 0; p < NP; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = Lanes{};
  for (int64_t r = 0; r < k.rows; ++r) {
    for (int64_t s = 0; s < k.segs; ++s) {
      const int64_t xo = r * k.x_row + s * k.x_seg, wo = r * k.w_row + s * k.w_seg;
      for (int64_t q = 0; q < k.len; ++q) {
        Lanes wv[NV];
        for (int v = 0; v < NV; ++v)
          __builtin_memcpy(&wv[v], w[v] + (wo + q) * kLanes, sizeof(Lanes));
        for (int p = 0; p < NP; ++p) {
          const int64_t xw = static_cast<int64_t>(x[p][xo + q]);
          for (int v = 0; v < NV; ++v) acc[p][v] += popcount(wv[v] ^ xw);
        }
      }
    }
  }
  for (int p = 0; p < NP; ++p)
    for (int v = 0; v < NV; ++v) count[p][v] = acc[p][v];
}

// Packs rows [r0, r1) of x [N, C, S] into bits [N·S, words]: rows are samples when pixels are
// contiguous (x.stride(2) == 1), else pixels (flattened n, s) with contiguous channels.
template <typename T>
void pack_rows(const T* x, int64_t C, int64_t S, int64_t xn, int64_t xc, int64_t xs,
               bool channels_contiguous, const T* clip, const T* low, const T* high, int64_t r0,
               int64_t r1, uint64_t* bits) {
  const int64_t words = (C + 63) / 64;
  auto run = [&](auto pred) {
    if (!channels_contiguous) {
      for (int64_t n = r0; n < r1; ++n)
        pack_channels_strided(x + n * xn, C, S, xc, pred, bits + n * S * words);
      return;
    }
    for (int64_t m = r0; m < r1;) {
      const int64_t n = m / S, s = m % S, count = std::min(r1 - m, S - s);
      pack_channels_contiguous(x + n * xn + s * xs, C, count, xs, pred, bits + m * words);
      m += count;
    }
  };
  if (clip != nullptr) {
    run(ClipBit<T>{*clip});
  } else if (low != nullptr) {
    run(IntervalBit<T>{low, high});
  } else {
    run(SignBit<T>{});
  }
}

// The outputs of pixels [m0, m1) (flattened b, oh, ow) for every filter: the tile counts, then
// dot = taps·C − 2·count (less the taps in a zero pad) and out = dot · scale (· k) (+ bias).

template <typename T>
void xnor_pixels(const XnorArgs<T>& a, int64_t m0, int64_t m1) {
  constexpr int NP = kTilePixels;
  const Geometry& g = a.g;
  const int64_t Cw = g.words, O = g.out_channels, P = g.out_h * g.out_w;
  const int64_t taps = g.kernel_h * g.kernel_w, full_dot = taps * g.channels;
  const int64_t groups = (O + kLanes - 1) / kLanes;
  // One output pixel of the tile: where its words start, where its outputs go, its K-map value,
  // and the zero pad's correction of its dots (null inside the image).
  struct Pixel {
    const uint64_t* x;
    T* out;
    T k;
    const int64_t* correction;
  };
  auto pixel_of = [&](int64_t m) {
    const int64_t b = m / P, q = m % P, i = q / g.out_w, j = q % g.out_w;
    const int64_t top = i * g.stride_h, left = j * g.stride_w;
    const int64_t* correction = nullptr;
    if (a.correction != nullptr) {
      const int64_t pattern = a.row_pattern[i] * a.col_patterns + a.col_pattern[j];
      if (pattern != 0) correction = a.correction + pattern * groups * kLanes;
    }
    return Pixel{a.x + ((b * g.padded_h + top) * g.padded_w + left) * Cw, a.out + (b * P + q) * O,
                 a.k_map != nullptr ? a.k_map[b * P + q] : T(1), correction};
  };
  // The epilogue, kLanes filters at a time: each product rounded in the reference's order.
  typedef T Values __attribute__((vector_size(sizeof(T) * kLanes)));
  const Lanes full = Lanes{} + full_dot;
  auto emit = [&](const Pixel& px, int64_t group, Lanes count) {
    Lanes dot = full - 2 * count;
    if (px.correction != nullptr) {
      Lanes correction;
      __builtin_memcpy(&correction, px.correction + group * kLanes, sizeof(Lanes));
      dot -= correction;
    }
    Values scale, value = __builtin_convertvector(dot, Values);
    __builtin_memcpy(&scale, a.scale + group * kLanes, sizeof(Values));
    value = value * scale;
    if (a.k_map != nullptr) value = value * px.k;
    if (a.bias != nullptr) {
      Values bias;
      __builtin_memcpy(&bias, a.bias + group * kLanes, sizeof(Values));
      value = value + bias;
    }
    const int64_t o0 = group * kLanes, valid = std::min<int64_t>(kLanes, O - o0);
    T* out = px.out + o0;  // a pixel's filters are contiguous (channels-last)
    if (valid == kLanes) {
      __builtin_memcpy(out, &value, sizeof(Values));
    } else {
      for (int l = 0; l < valid; ++l) out[l] = value[l];
    }
  };
  auto run = [&](auto vectors, const Pixel(&px)[NP], int64_t real, int64_t group) {
    constexpr int NV = decltype(vectors)::value;
    const uint64_t* x[NP];
    for (int p = 0; p < NP; ++p) x[p] = px[p].x;
    const int64_t* w[NV];
    for (int v = 0; v < NV; ++v) w[v] = a.w + (group + v) * taps * Cw * kLanes;
    Lanes count[NP][NV];
    tile_counts<NP, NV>(x, w, a.walk, count);
    for (int p = 0; p < real; ++p)
      for (int v = 0; v < NV; ++v) emit(px[p], group + v, count[p][v]);
  };
  // Blocks of pixels × filter vectors sized for L1: about 16 KiB of x words and 24 KiB of w
  // words (K words per pixel or filter), swept tile by tile.
  constexpr int64_t kMaxBlockTiles = 32;
  const int64_t K = taps * Cw;
  const int64_t block_tiles = std::clamp<int64_t>(16384 / (NP * K * 8), 1, kMaxBlockTiles);
  const int64_t block_vectors =
      std::max<int64_t>(1, 24576 / (K * 8 * kLanes) / kTileVectors) * kTileVectors;
  for (int64_t mb = m0; mb < m1; mb += block_tiles * NP) {
    const int64_t mb1 = std::min(m1, mb + block_tiles * NP), tiles = (mb1 - mb + NP - 1) / NP;
    // A short last tile repeats its last pixel and emits only the real ones.
    Pixel px[kMaxBlockTiles][NP];
    for (int64_t t = 0; t < tiles; ++t)
      for (int p = 0; p < NP; ++p) px[t][p] = pixel_of(std::min(mb + t * NP + p, mb1 - 1));
    for (int64_t gb = 0; gb < groups; gb += block_vectors) {
      const int64_t gb1 = std::min(groups, gb + block_vectors);
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t real = std::min<int64_t>(NP, mb1 - mb - t * NP);
        int64_t group = gb;
        for (; group + kTileVectors <= gb1; group += kTileVectors) {
          run(std::integral_constant<int, kTileVectors>{}, px[t], real, group);
        }
        for (; group < gb1; ++group) run(std::integral_constant<int, 1>{}, px[t], real, group);
      }
    }
  }
}

// Per-filter rows [O, K] (the weight's K = kh·kw·Cw words, or its kh·kw tap popcounts) as this
// level's filter vectors [ceil(O / kLanes), K, kLanes], the missing filters of the last vector 0.
void transpose_filters(const int64_t* w, int64_t O, int64_t K, int64_t* out) {
  const int64_t groups = (O + kLanes - 1) / kLanes;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t k = 0; k < K; ++k)
      for (int l = 0; l < kLanes; ++l) {
        const int64_t o = g * kLanes + l;
        out[(g * K + k) * kLanes + l] = o < O ? w[o * K + k] : 0;
      }
}

#if CVOPS_CPU_AVX512
// The AMX loops, compiled at this level and run where cpu_level() is kAmx: the ±1 dots as int8
// TDPBSSD tiles (16 pixels × 16 filters × 64 channels an instruction) over byte copies of the bits,
// then the same epilogue as the popcount tiles.

// Rows [r0, r1) (flattened b, padded row) of the padded bits xp [B, Hp, Wp, Cw] as bytes
// [.., Wp, 64·Cw]: +1 for a set bit, −1 for a clear one, 0 past the last channel and in a zero pad.
inline void expand_input(const uint64_t* xp, const Geometry& g, int64_t r0, int64_t r1,
                         int8_t* out) {
  const int64_t Cw = g.words, H = g.padded_h - 2 * g.pad_h, W = g.padded_w - 2 * g.pad_w;
  const bool zero_pad = g.pad_value == PadValue::kZero;
  const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
  for (int64_t row = r0; row < r1; ++row) {
    const bool pad_row = zero_pad && in_padding(row % g.padded_h, g.pad_h, H);
    for (int64_t q = 0; q < g.padded_w; ++q) {
      const bool pad = pad_row || (zero_pad && in_padding(q, g.pad_w, W));
      const uint64_t* words = xp + (row * g.padded_w + q) * Cw;
      int8_t* bytes = out + (row * g.padded_w + q) * Cw * 64;
      for (int64_t k = 0; k < Cw; ++k) {
        const __mmask64 valid = pad ? 0 : channel_word_mask(k, g.channels);
        const __m512i signs = _mm512_mask_blend_epi8(words[k], minus, plus);
        _mm512_storeu_si512(bytes + 64 * k, _mm512_maskz_mov_epi8(valid, signs));
      }
    }
  }
}

// Filter tiles [t0, t1) of the weight bits w [O, steps] (steps = kh·kw·Cw words) as TDPBSSD's
// second operand [tiles, steps, 16, 16, 4] bytes: row r of a step holds the ±1 bytes of channels
// 4r .. 4r + 3 of that word for each of the tile's 16 filters (filters past O are all −1; their
// outputs are never written).
inline void expand_filters(const uint64_t* w, int64_t O, int64_t steps, int64_t t0, int64_t t1,
                           int8_t* out) {
  alignas(64) int32_t table[16];  // the 4 bytes of nibble i: byte j is +1 where bit j is set
  for (int i = 0; i < 16; ++i) {
    uint32_t bytes = 0;
    for (int j = 0; j < 4; ++j) bytes |= uint32_t((i >> j) & 1 ? 0x01 : 0xff) << (8 * j);
    table[i] = static_cast<int32_t>(bytes);
  }
  const __m512i lut = _mm512_load_si512(table), nibble = _mm512_set1_epi32(15);
  alignas(64) uint64_t words[16];
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t s = 0; s < steps; ++s) {
      for (int n = 0; n < 16; ++n) {
        const int64_t o = 16 * t + n;
        words[n] = o < O ? w[o * steps + s] : 0;
      }
      // The 16 words' low and high halves as 16 lanes each.
      const __m512i first = _mm512_load_si512(words), second = _mm512_load_si512(words + 8);
      const __m512i low = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(first)),
                                             _mm512_cvtepi64_epi32(second), 1);
      const __m512i high = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm512_cvtepi64_epi32(_mm512_srli_epi64(first, 32))),
          _mm512_cvtepi64_epi32(_mm512_srli_epi64(second, 32)), 1);
      int8_t* tile = out + (t * steps + s) * 1024;
      for (int r = 0; r < 8; ++r) {
        const __m512i lo = _mm512_and_si512(_mm512_srli_epi32(low, 4 * r), nibble);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi32(high, 4 * r), nibble);
        _mm512_store_si512(tile + 64 * r, _mm512_permutexvar_epi32(lo, lut));
        _mm512_store_si512(tile + 64 * (r + 8), _mm512_permutexvar_epi32(hi, lut));
      }
    }
  }
}

// The dots of pixel tiles t0 (and t0 + 1 if MT = 2) by filter tiles f0 (and f0 + 1 if NT = 2)
// over every step, into acc[2·mt + nt] [16 pixels][16 filters]. Tiles 0–3 accumulate, 4–5 hold
// the pixels' bytes, 6–7 the filters'.
template <int MT, int NT, typename T>
C10_ALWAYS_INLINE void amx_dots(const AmxArgs<T>& a, int64_t t0, int64_t f0,
                                int32_t (*acc)[16][16]) {
  amx::zero<0>();
  if constexpr (NT > 1) amx::zero<1>();
  if constexpr (MT > 1) amx::zero<2>();
  if constexpr (MT > 1 && NT > 1) amx::zero<3>();
  const int8_t* x0 = a.x + a.tile_offset[t0];
  const int8_t* x1 = MT > 1 ? a.x + a.tile_offset[t0 + 1] : x0;
  const int8_t* w0 = a.w + f0 * a.steps * 1024;
  const int8_t* w1 = w0 + a.steps * 1024;
  for (int64_t s = 0; s < a.steps; ++s) {
    const int64_t xo = a.step_offset[s];
    amx::load<4>(x0 + xo, a.row_stride);
    amx::load<6>(w0 + s * 1024, 64);
    amx::dot_int8<0, 4, 6>();
    if constexpr (NT > 1) {
      amx::load<7>(w1 + s * 1024, 64);
      amx::dot_int8<1, 4, 7>();
    }
    if constexpr (MT > 1) {
      amx::load<5>(x1 + xo, a.row_stride);
      amx::dot_int8<2, 5, 6>();
      if constexpr (NT > 1) amx::dot_int8<3, 5, 7>();
    }
  }
  amx::store<0>(acc[0], 64);
  if constexpr (NT > 1) amx::store<1>(acc[1], 64);
  if constexpr (MT > 1) amx::store<2>(acc[2], 64);
  if constexpr (MT > 1 && NT > 1) amx::store<3>(acc[3], 64);
}

// out = dot · scale (· k) (+ bias) for the used rows of pixel tile t and the filters of tile f,
// each product rounded in the reference's order, as the popcount tiles' epilogue does.
template <typename T>
C10_ALWAYS_INLINE void amx_emit(const AmxArgs<T>& a, int64_t t, int64_t f,
                                const int32_t (&dots)[16][16]) {
  const int64_t o0 = 16 * f, valid = std::min<int64_t>(16, a.out_channels - o0);
  const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
  for (int r = 0; r < 16; ++r) {
    const int64_t m = a.tile_pixels[16 * t + r];
    if (m < 0) continue;
    T* out = a.out + m * a.out_channels + o0;
    const __m512i dot = _mm512_load_si512(dots[r]);
    if constexpr (std::is_same_v<T, float>) {
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_loadu_ps(a.scale + o0));
      if (a.k_map != nullptr) v = _mm512_mul_ps(v, _mm512_set1_ps(a.k_map[m]));
      if (a.bias != nullptr) v = _mm512_add_ps(v, _mm512_loadu_ps(a.bias + o0));
      _mm512_mask_storeu_ps(out, mask, v);
    } else {
      for (int h = 0; h < 2; ++h) {
        const __m256i half =
            h == 0 ? _mm512_castsi512_si256(dot) : _mm512_extracti64x4_epi64(dot, 1);
        __m512d v = _mm512_mul_pd(_mm512_cvtepi32_pd(half), _mm512_loadu_pd(a.scale + o0 + 8 * h));
        if (a.k_map != nullptr) v = _mm512_mul_pd(v, _mm512_set1_pd(a.k_map[m]));
        if (a.bias != nullptr) v = _mm512_add_pd(v, _mm512_loadu_pd(a.bias + o0 + 8 * h));
        _mm512_mask_storeu_pd(out + 8 * h, static_cast<__mmask8>(mask >> (8 * h)), v);
      }
    }
  }
}

// Pairs [p0, p1) of pixel tiles against every filter tile, two by two.
template <typename T>
void xnor_amx(const AmxArgs<T>& a, int64_t p0, int64_t p1) {
  static const amx::TileConfig config = amx::full_tiles();
  amx::load_config(config);
  alignas(64) int32_t acc[4][16][16];
  for (int64_t pair = p0; pair < p1; ++pair) {
    const int64_t t0 = 2 * pair;
    const bool two_m = t0 + 1 < a.pixel_tiles;
    for (int64_t f0 = 0; f0 < a.filter_tiles; f0 += 2) {
      const bool two_n = f0 + 1 < a.filter_tiles;
      if (two_m && two_n) {
        amx_dots<2, 2>(a, t0, f0, acc);
      } else if (two_m) {
        amx_dots<2, 1>(a, t0, f0, acc);
      } else if (two_n) {
        amx_dots<1, 2>(a, t0, f0, acc);
      } else {
        amx_dots<1, 1>(a, t0, f0, acc);
      }
      for (int mt = 0; mt < (two_m ? 2 : 1); ++mt)
        for (int nt = 0; nt < (two_n ? 2 : 1); ++nt)
          amx_emit(a, t0 + mt, f0 + nt, acc[2 * mt + nt]);
    }
  }
  amx::release();
}
#endif

}  // namespace CVOPS_CPU_NS
