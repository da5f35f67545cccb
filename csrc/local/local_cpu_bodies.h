// The loops of the local CPU kernels, compiled once per CPU level (common/cpu_levels.h): included
// by local_cpu.cpp only, inside its namespace. Up to kStreamBatch samples the weights are the
// traffic, so each location's filter rows are streamed once against its patches [B, taps]; past
// that the samples are the vector lanes (batch_lanes_forward). Sums run in vectors (GCC's vector
// extension, split into whatever registers the level has), lane by lane, then over the lanes in
// order where a sum spans lanes: every level computes the same bits.
namespace CVOPS_CPU_NS {

#include "common/cpu_vector_bodies.h"

template <typename T>
struct RowOf {
  typedef T type __attribute__((vector_size(64)));
};
template <typename T>
using Row = typename RowOf<T>::type;

// out[o, b] (B = kB samples a row) = Σ_t w[o, t] · patches[b, t] for o < O.
template <typename T, int kB>
void stream_forward_rows(const T* w, const T* patches, int64_t O, int64_t taps, T* out) {
  constexpr int64_t kLanes = 64 / sizeof(T);
  const int64_t body = taps / kLanes * kLanes;
  for (int64_t o = 0; o < O; ++o) {
    const T* row = w + o * taps;
    Row<T> acc[kB] = {};
    for (int64_t t = 0; t < body; t += kLanes) {
      Row<T> weight, value;
      __builtin_memcpy(&weight, row + t, sizeof(weight));
      for (int b = 0; b < kB; ++b) {
        __builtin_memcpy(&value, patches + b * taps + t, sizeof(value));
        acc[b] += weight * value;
      }
    }
    for (int b = 0; b < kB; ++b) {
      for (int64_t t = body; t < taps; ++t) acc[b][t - body] += row[t] * patches[b * taps + t];
      T sum = 0;
      for (int64_t lane = 0; lane < kLanes; ++lane) sum += acc[b][lane];
      out[o * kB + b] = sum;
    }
  }
}

// One location's gradients from grad [O, B]: grad_w[o, t] = Σ_b grad[o, b] · patches[b, t] (b in
// order) and grad_patches[b, t] = Σ_o w[o, t] · grad[o, b] (o in order; zeros on entry), one pass
// over the filter rows. Element by element: no reordering, whatever the vector width.
template <typename T, int kB>
void stream_backward_rows(const T* w, const T* patches, const T* grad, int64_t O, int64_t taps,
                          T* grad_w, T* grad_patches) {
  constexpr int64_t kLanes = 64 / sizeof(T);
  const int64_t body = taps / kLanes * kLanes;
  for (int64_t o = 0; o < O; ++o) {
    const T* row = w + o * taps;
    T* grad_row = grad_w + o * taps;
    T g[kB];
    for (int b = 0; b < kB; ++b) g[b] = grad[o * kB + b];
    for (int64_t t = 0; t < body; t += kLanes) {
      Row<T> weight, value, sum, dst;
      __builtin_memcpy(&weight, row + t, sizeof(weight));
      for (int b = 0; b < kB; ++b) {
        __builtin_memcpy(&value, patches + b * taps + t, sizeof(value));
        sum = b == 0 ? g[0] * value : sum + g[b] * value;
        __builtin_memcpy(&dst, grad_patches + b * taps + t, sizeof(dst));
        dst += weight * g[b];
        __builtin_memcpy(grad_patches + b * taps + t, &dst, sizeof(dst));
      }
      __builtin_memcpy(grad_row + t, &sum, sizeof(sum));
    }
    for (int64_t t = body; t < taps; ++t) {  // the same sums, element by element
      T sum = g[0] * patches[t];
      for (int b = 1; b < kB; ++b) sum += g[b] * patches[b * taps + t];
      grad_row[t] = sum;
      for (int b = 0; b < kB; ++b) grad_patches[b * taps + t] += row[t] * g[b];
    }
  }
}

// f(std::integral_constant<int, B>()) for the batch B in 1..kStreamBatch: the rows' loops unrolled
// over the samples, their accumulators in registers.
template <typename F>
C10_ALWAYS_INLINE void with_batch(int64_t B, F&& f) {
  [&]<int... k>(std::integer_sequence<int, k...>) {
    ((B == k + 1 ? (f(std::integral_constant<int, k + 1>()), true) : false) || ...);
  }(std::make_integer_sequence<int, kStreamBatch>());
}

template <typename T>
void stream_forward(const T* w, const T* patches, int64_t O, int64_t B, int64_t taps, T* out) {
  with_batch(
      B, [&](auto samples) { stream_forward_rows<T, samples.value>(w, patches, O, taps, out); });
}

template <typename T>
void stream_backward(const T* w, const T* patches, const T* grad, int64_t O, int64_t B,
                     int64_t taps, T* grad_w, T* grad_patches) {
  with_batch(B, [&](auto samples) {
    stream_backward_rows<T, samples.value>(w, patches, grad, O, taps, grad_w, grad_patches);
  });
}

// Past kStreamBatch samples, the forward runs over xt [C, Hp, Wp, Bp]: x zero-padded with the batch
// last (Bp: B rounded up to whole 64-byte vectors), so each tap of a location reads contiguous
// vectors of samples and each weight is broadcast once per block of kV vectors, fed to kV FMAs.
// Registers: kAccumulators vectors of sums (of 32 zmm at AVX-512, of 16 ymm otherwise).
#if CVOPS_CPU_AVX512
constexpr int kAccumulators = 16;
#else
constexpr int kAccumulators = 8;
#endif

// f(std::integral_constant<int, kV>(), b) for the blocks of kV vectors of samples that cover
// [b0, b1): kV = 4, the last block 1 to 4 vectors (the last of them may end past b1).
template <typename T, typename F>
C10_ALWAYS_INLINE void for_each_sample_block(int64_t b0, int64_t b1, F&& f) {
  constexpr int64_t kLanes = kWideBytes / sizeof(T);
  int64_t b = b0;
  for (; b + 4 * kLanes <= b1; b += 4 * kLanes) f(std::integral_constant<int, 4>(), b);
  switch ((b1 - b + kLanes - 1) / kLanes) {
    case 4: return f(std::integral_constant<int, 4>(), b);
    case 3: return f(std::integral_constant<int, 3>(), b);
    case 2: return f(std::integral_constant<int, 2>(), b);
    case 1: return f(std::integral_constant<int, 1>(), b);
  }
}

// out[o, b] (o < kO rows of w [.., taps], b < kV vectors of samples from x) =
// Σ_t w[o, t] · x[offsets[t] + b], one FMA a product, the taps in order; lanes past B not stored.
template <typename T, int kO, int kV>
C10_ALWAYS_INLINE void batch_lanes_tile(const T* w, int64_t taps, const T* x,
                                        const int64_t* offsets, int64_t lanes_left, int64_t B,
                                        T* out) {
  using V = typename VecOf<T, kWideBytes>::type;
  constexpr int64_t kLanes = kWideBytes / sizeof(T);
  V acc[kO][kV] = {};
  for (int64_t t = 0; t < taps; ++t) {
    V column[kV];
    for (int k = 0; k < kV; ++k)
      __builtin_memcpy(&column[k], x + offsets[t] + k * kLanes, sizeof(V));
    for (int o = 0; o < kO; ++o) {
      const T weight = w[o * taps + t];
      for (int k = 0; k < kV; ++k) acc[o][k] = fused_multiply_add(weight, column[k], acc[o][k]);
    }
  }
  for (int o = 0; o < kO; ++o) {
    for (int k = 0; k < kV; ++k) {
      const int64_t valid = std::min<int64_t>(kLanes, lanes_left - k * kLanes);
      if (valid == kLanes) {
        __builtin_memcpy(out + o * B + k * kLanes, &acc[o][k], sizeof(V));
      } else {
        for (int64_t lane = 0; lane < valid; ++lane)
          out[o * B + k * kLanes + lane] = acc[o][k][lane];
      }
    }
  }
}

// One location's out [O, B] from its filter rows w [O, taps] and x, its window's corner in xt: in
// each block of samples, kO = kAccumulators / kV rows at a time, the last rows one by one.
template <typename T>
void batch_lanes_forward(const T* w, int64_t O, int64_t taps, const T* x, const int64_t* offsets,
                         int64_t B, T* out) {
  for_each_sample_block<T>(0, B, [&](auto vectors, int64_t b0) {
    constexpr int kV = decltype(vectors)::value, kO = kAccumulators / kV;
    int64_t o = 0;
    for (; o + kO <= O; o += kO)
      batch_lanes_tile<T, kO, kV>(w + o * taps, taps, x + b0, offsets, B - b0, B, out + o * B + b0);
    for (; o < O; ++o)
      batch_lanes_tile<T, 1, kV>(w + o * taps, taps, x + b0, offsets, B - b0, B, out + o * B + b0);
  });
}

// gx[offsets[t] + b] += Σ_o w[o, t] · g[o, b] for kT taps t from w's and offsets' first and kV
// vectors of samples b (g's rows Bp apart): the sum one FMA a product, o in order, then one add.
template <typename T, int kT, int kV>
C10_ALWAYS_INLINE void patch_gradient_tile(const T* w, int64_t taps, const T* g, int64_t O,
                                           int64_t Bp, const int64_t* offsets, T* gx) {
  using V = typename VecOf<T, kWideBytes>::type;
  constexpr int64_t kLanes = kWideBytes / sizeof(T);
  V acc[kT][kV] = {};
  for (int64_t o = 0; o < O; ++o) {
    V grad[kV];
    for (int k = 0; k < kV; ++k) __builtin_memcpy(&grad[k], g + o * Bp + k * kLanes, sizeof(V));
    for (int t = 0; t < kT; ++t) {
      const T weight = w[o * taps + t];
      for (int k = 0; k < kV; ++k) acc[t][k] = fused_multiply_add(weight, grad[k], acc[t][k]);
    }
  }
  for (int t = 0; t < kT; ++t) {
    for (int k = 0; k < kV; ++k) {
      V sum;
      __builtin_memcpy(&sum, gx + offsets[t] + k * kLanes, sizeof(V));
      sum += acc[t][k];
      __builtin_memcpy(gx + offsets[t] + k * kLanes, &sum, sizeof(V));
    }
  }
}

// The patches' gradient of locations l0..l0 + n, in order (corners[l]: a window's corner in gx),
// added onto gx (batch-last, as xt) for samples [b0, b1) (whole vectors, within Bp), from
// w [L, O, taps] and g [L, O, Bp]: kAccumulators / kV taps at a time, each weight broadcast once.
template <typename T>
void batch_lanes_patch_gradient(const T* w, const T* g, int64_t l0, int64_t n, int64_t O,
                                int64_t taps, int64_t Bp, int64_t b0, int64_t b1,
                                const int64_t* corners, const int64_t* offsets, T* gx) {
  for_each_sample_block<T>(b0, b1, [&](auto vectors, int64_t b) {
    constexpr int kV = decltype(vectors)::value, kT = kAccumulators / kV;
    // The tiles read a location's weights a few columns of every filter row at a time, which the
    // hardware prefetcher does not follow: each tile prefetches its share of the next location's.
    const int64_t lines = (O * taps * int64_t(sizeof(T)) + 63) / 64,
                  tiles = std::max<int64_t>(1, taps / kT);
    const int64_t share = (lines + tiles - 1) / tiles;
    for (int64_t l = l0; l < l0 + n; ++l) {
      const T* wl = w + l * O * taps;
      const T* gl = g + l * O * Bp + b;
      T* corner = gx + corners[l] + b;
      const char* next = reinterpret_cast<const char*>(wl + O * taps);
      int64_t t = 0;
      for (int64_t line = 0; t + kT <= taps; t += kT) {
        if (l + 1 < l0 + n)
          for (int64_t q = 0; q < share && line < lines; ++q, ++line)
            __builtin_prefetch(next + line * 64);
        patch_gradient_tile<T, kT, kV>(wl + t, taps, gl, O, Bp, offsets + t, corner);
      }
      for (; t < taps; ++t)
        patch_gradient_tile<T, 1, kV>(wl + t, taps, gl, O, Bp, offsets + t, corner);
    }
  });
}

}  // namespace CVOPS_CPU_NS
