// CPU loops of the bilinear family. Each pass is a contiguous streaming loop over rows (threaded
// over rows or columns by at::parallel_for, whose split never changes a result: every output is
// accumulated by one task in a fixed order). The Tensor Sketch scatters each row of G into a
// private d-bin accumulator in L1, in fixed chunks of rows merged in order.
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "bilinear/bilinear.h"
#include "bilinear/epilogue_math.h"
#include "common/cpu_reduce.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "common/symmetric_gram.h"

namespace cvops::bilinear {
namespace {

constexpr int kLanes = 16;  // independent partial sums: vectorisable reductions
constexpr int64_t kSketchChunk = int64_t(1)
                                 << 17;  // G entries per sketch task (fixed: deterministic)
constexpr int64_t kColumnGrain = 64;

// ‖signed_sqrt(alpha·z)‖² of one row. With the signed sqrt u² = |alpha·z| + eps (z ≠ 0): no sqrt needed.
template <typename acc_t>
acc_t row_sum_squares(const acc_t* z, int64_t n, acc_t alpha, bool signed_sqrt, acc_t eps) {
  if (signed_sqrt) {
    return lane_sum<kLanes, acc_t>(n, [&](int64_t i) {
      const acc_t v = alpha * z[i];
      return v != acc_t(0) ? std::abs(v) + eps : acc_t(0);
    });
  }
  return lane_sum<kLanes, acc_t>(n, [&](int64_t i) {
    const acc_t v = alpha * z[i];
    return v * v;
  });
}

void epilogue_cpu(const at::Tensor& z, double alpha, const EpilogueOptions& opts, at::Tensor& out,
                  at::Tensor& norm) {
  const int64_t rows = z.size(0), n = z.size(1);
  CVOPS_DISPATCH_FLOATING(out.scalar_type(), "cvops_bilinear_epilogue_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* zp = z.const_data_ptr<acc_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    acc_t* np = opts.l2_normalize ? norm.data_ptr<acc_t>() : nullptr;
    const auto a = static_cast<acc_t>(alpha), eps = static_cast<acc_t>(opts.eps);
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const acc_t* zr = zp + r * n;
        scalar_t* o = op + r * n;  // may be zr itself: each element is read before it is written
        acc_t inv = 1;
        if (np) {
          const acc_t nr = std::sqrt(row_sum_squares(zr, n, a, opts.signed_sqrt, eps));
          np[r] = nr;
          inv = acc_t(1) / clamped_norm(nr);
        }
        if (opts.signed_sqrt) {
          for (int64_t i = 0; i < n; ++i)
            o[i] = static_cast<scalar_t>(signed_sqrt(a * zr[i], eps) * inv);
        } else {
          const acc_t s = a * inv;
          for (int64_t i = 0; i < n; ++i) o[i] = static_cast<scalar_t>(zr[i] * s);
        }
      }
    });
  });
}

void epilogue_backward_cpu(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& norm,
                           bool signed_sqrt, bool l2, at::Tensor& grad_z) {
  const int64_t rows = out.size(0), n = out.size(1);
  CVOPS_DISPATCH_FLOATING(out.scalar_type(), "cvops_bilinear_epilogue_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* op = out.const_data_ptr<scalar_t>();
    const acc_t* np = l2 ? norm.const_data_ptr<acc_t>() : nullptr;
    acc_t* dz = grad_z.data_ptr<acc_t>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* g = gp + r * n;
        const scalar_t* o = op + r * n;
        acc_t row_norm = 0, dot = 0;
        if (l2) {
          row_norm = np[r];
          dot = lane_sum<kLanes, acc_t>(n, [&](int64_t i) { return acc_t(o[i]) * acc_t(g[i]); });
        }
        acc_t* d = dz + r * n;
        for (int64_t i = 0; i < n; ++i) {
          d[i] = epilogue_grad<acc_t>(g[i], o[i], l2, row_norm, dot, signed_sqrt);
        }
      }
    });
  });
}

void tensor_sketch_cpu(const at::Tensor& gram, const at::Tensor& h1, const at::Tensor& s1,
                       const at::Tensor& h2, const at::Tensor& s2, at::Tensor& sketch) {
  const int64_t B = gram.size(0), C = gram.size(1), D = gram.size(2), d = sketch.size(1);
  // Fixed chunks of rows per sample (they depend on the shape only, never on the thread count),
  // each scattered into its own accumulator, then merged in chunk order: bitwise reproducible.
  const int64_t chunk_rows = std::max<int64_t>(1, kSketchChunk / std::max<int64_t>(D, 1));
  const int64_t chunks = (C + chunk_rows - 1) / chunk_rows;
  AT_DISPATCH_FLOATING_TYPES(gram.scalar_type(), "cvops_tensor_sketch_cpu", [&] {
    const scalar_t* g = gram.const_data_ptr<scalar_t>();
    const int64_t* b1 = h1.const_data_ptr<int64_t>();
    const int64_t* b2 = h2.const_data_ptr<int64_t>();
    const scalar_t* sign1 = s1.const_data_ptr<scalar_t>();
    const scalar_t* sign2 = s2.const_data_ptr<scalar_t>();
    auto partial = chunks > 1 ? at::zeros({B, chunks, d}, sketch.options()) : sketch;
    scalar_t* acc = partial.data_ptr<scalar_t>();
    at::parallel_for(0, B * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / chunks, a0 = (t % chunks) * chunk_rows;
        const int64_t a1 = std::min(C, a0 + chunk_rows);
        scalar_t* bins = acc + t * d;
        for (int64_t a = a0; a < a1; ++a) {
          const scalar_t* row = g + (b * C + a) * D;
          const int64_t base = b1[a];
          const scalar_t sa = sign1[a];
          for (int64_t c = 0; c < D; ++c) {
            int64_t k = base + b2[c];
            k = k >= d ? k - d : k;
            bins[k] += sa * sign2[c] * row[c];
          }
        }
      }
    });
    if (chunks > 1) {
      scalar_t* out = sketch.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          for (int64_t c = 0; c < chunks; ++c) {
            const scalar_t* src = acc + (b * chunks + c) * d;
            for (int64_t k = 0; k < d; ++k) out[b * d + k] += src[k];
          }
        }
      });
    }
  });
}

void symmetric_tensor_sketch_cpu(const at::Tensor& features, const at::Tensor& h1,
                                 const at::Tensor& s1, const at::Tensor& h2, const at::Tensor& s2,
                                 at::Tensor& sketch) {
  const int64_t B = features.size(0), C = features.size(1), d = sketch.size(1);
  const int64_t panel = gram_panel_rows(C);
  const auto panels = gram_upper_panels(features);  // the symmetric GEMM's panels (MKL, threaded)
  const int64_t P = static_cast<int64_t>(panels.size()), tasks = B * P;
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "cvops_symmetric_tensor_sketch_cpu", [&] {
    const int64_t* b1 = h1.const_data_ptr<int64_t>();
    const int64_t* b2 = h2.const_data_ptr<int64_t>();
    const scalar_t* sign1 = s1.const_data_ptr<scalar_t>();
    const scalar_t* sign2 = s2.const_data_ptr<scalar_t>();
    // One accumulator per (sample, panel) task, merged in panel order: reproducible bit for bit.
    auto partial = tasks > 1 ? at::zeros({tasks, d}, sketch.options()) : sketch;
    scalar_t* acc = partial.data_ptr<scalar_t>();
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / P, p = t % P, i0 = p * panel, width = C - i0;
        const int64_t rows = panels[p].size(1);
        const scalar_t* src = panels[p].const_data_ptr<scalar_t>() + b * rows * width;
        scalar_t* bins = acc + t * d;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t a = i0 + r;
          const int64_t a1 = b1[a], a2 = b2[a];
          const scalar_t sa1 = sign1[a], sa2 = sign2[a];
          const scalar_t* row = src + r * width;
          int64_t k = a1 + a2;
          bins[k >= d ? k - d : k] += sa1 * sa2 * row[r];  // G[a, a]
          for (int64_t cc = r + 1; cc < width; ++cc) {  // G[a, c] = G[c, a], c > a: two bins
            const int64_t c = i0 + cc;
            const scalar_t v = row[cc];
            int64_t k1 = a1 + b2[c];
            bins[k1 >= d ? k1 - d : k1] += sa1 * sign2[c] * v;
            int64_t k2 = b1[c] + a2;
            bins[k2 >= d ? k2 - d : k2] += sign1[c] * sa2 * v;
          }
        }
      }
    });
    if (tasks > 1) {
      scalar_t* out = sketch.data_ptr<scalar_t>();
      at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          for (int64_t p = 0; p < P; ++p) {
            const scalar_t* src = acc + (b * P + p) * d;
            for (int64_t k = 0; k < d; ++k) out[b * d + k] += src[k];
          }
        }
      });
    }
  });
}

void tensor_sketch_backward_cpu(const at::Tensor& grad, const at::Tensor& h1, const at::Tensor& s1,
                                const at::Tensor& h2, const at::Tensor& s2, at::Tensor& grad_gram) {
  const int64_t B = grad_gram.size(0), C = grad_gram.size(1), D = grad_gram.size(2);
  const int64_t d = grad.size(1);
  AT_DISPATCH_FLOATING_TYPES(grad_gram.scalar_type(), "cvops_tensor_sketch_backward_cpu", [&] {
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const int64_t* b1 = h1.const_data_ptr<int64_t>();
    const int64_t* b2 = h2.const_data_ptr<int64_t>();
    const scalar_t* sign1 = s1.const_data_ptr<scalar_t>();
    const scalar_t* sign2 = s2.const_data_ptr<scalar_t>();
    scalar_t* out = grad_gram.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / C, a = t % C;
        const scalar_t* g = gp + b * d;
        const int64_t base = b1[a];
        const scalar_t sa = sign1[a];
        scalar_t* row = out + t * D;
        for (int64_t c = 0; c < D; ++c) {
          int64_t k = base + b2[c];
          k = k >= d ? k - d : k;
          row[c] = sa * sign2[c] * g[k];
        }
      }
    });
  });
}

void segment_product_sum_cpu(const at::Tensor& a, const at::Tensor& b, int64_t row0,
                             int64_t rows_per_sample, int64_t group, int64_t num_positive,
                             at::Tensor& out) {
  const int64_t L = a.size(0), K = out.size(1);
  CVOPS_DISPATCH_FLOATING(a.scalar_type(), "cvops_segment_product_sum_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    const scalar_t* bp = b.const_data_ptr<scalar_t>();
    acc_t* op = out.data_ptr<acc_t>();
    // Split over columns: each (sample, k) is owned by one task, which adds the rows in order.
    at::parallel_for(0, K, kColumnGrain, [&](int64_t k0, int64_t k1) {
      for (int64_t r = 0; r < L; ++r) {
        acc_t* o = op + ((row0 + r) / rows_per_sample) * K;
        const scalar_t* ar = ap + r * K * group;
        const scalar_t* br = bp + r * K * group;
        if (group == 1 && num_positive == 1) {
          for (int64_t k = k0; k < k1; ++k) o[k] += acc_t(ar[k]) * acc_t(br[k]);
          continue;
        }
        for (int64_t k = k0; k < k1; ++k) {
          acc_t pos = 0, neg = 0;
          for (int64_t j = 0; j < num_positive; ++j)
            pos += acc_t(ar[k * group + j]) * acc_t(br[k * group + j]);
          for (int64_t j = num_positive; j < group; ++j)
            neg += acc_t(ar[k * group + j]) * acc_t(br[k * group + j]);
          o[k] += pos - neg;
        }
      }
    });
  });
}

// z_j = Σ_{i<k} x[j·k + i]·y[j·k + i]; K > 0 fixes k at compile time (unrolled), K = 0 reads k.
template <int K, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
inline acc_t group_dot(const scalar_t* x, const scalar_t* y, int64_t j, int64_t k) {
  const int64_t kk = K > 0 ? K : k;
  acc_t s = 0;
  for (int64_t i = 0; i < kk; ++i) s += acc_t(x[j * kk + i]) * acc_t(y[j * kk + i]);
  return s;
}

template <int K, typename scalar_t>
void factorized_rows(const scalar_t* xp, const scalar_t* yp, int64_t rows, int64_t o, int64_t k,
                     const EpilogueOptions& opts, scalar_t* outp, at::opmath_type<scalar_t>* np) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto eps = static_cast<acc_t>(opts.eps);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> u(o);  // the row's pooled values before L2 (o is the small side)
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* x = xp + r * o * k;
      const scalar_t* y = yp + r * o * k;
      for (int64_t j = 0; j < o; ++j) {
        u[j] = maybe_signed_sqrt(group_dot<K>(x, y, j, k), eps, opts.signed_sqrt);
      }
      acc_t inv = 1;
      if (np) {
        const acc_t nr =
            std::sqrt(lane_sum<kLanes, acc_t>(o, [&](int64_t j) { return u[j] * u[j]; }));
        np[r] = nr;
        inv = acc_t(1) / clamped_norm(nr);
      }
      scalar_t* out = outp + r * o;
      for (int64_t j = 0; j < o; ++j) out[j] = static_cast<scalar_t>(u[j] * inv);
    }
  });
}

template <int K, typename scalar_t>
void factorized_backward_rows(const scalar_t* gp, const scalar_t* xp, const scalar_t* yp,
                              const scalar_t* outp, const at::opmath_type<scalar_t>* np,
                              int64_t rows, int64_t o, int64_t k, bool signed_sqrt, bool l2,
                              scalar_t* gxp, scalar_t* gyp) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t kk = K > 0 ? K : k;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* g = gp + r * o;
      const scalar_t* out = outp + r * o;
      acc_t row_norm = 0, dot = 0;
      if (l2) {
        row_norm = np[r];
        dot = lane_sum<kLanes, acc_t>(o, [&](int64_t j) { return acc_t(out[j]) * acc_t(g[j]); });
      }
      const scalar_t* x = xp + r * o * kk;
      const scalar_t* y = yp + r * o * kk;
      scalar_t* gx = gxp + r * o * kk;
      scalar_t* gy = gyp + r * o * kk;
      for (int64_t j = 0; j < o; ++j) {
        const acc_t dz = epilogue_grad<acc_t>(g[j], out[j], l2, row_norm, dot, signed_sqrt);
        for (int64_t i = j * kk; i < (j + 1) * kk; ++i) {
          gx[i] = static_cast<scalar_t>(dz * acc_t(y[i]));
          gy[i] = static_cast<scalar_t>(dz * acc_t(x[i]));
        }
      }
    }
  });
}

// Calls fn(std::integral_constant<int, K>) with K = k for the common MFB factors, else K = 0.
template <typename F>
void dispatch_group(int64_t k, const F& fn) {
  switch (k) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    case 8: return fn(std::integral_constant<int, 8>{});
    default: return fn(std::integral_constant<int, 0>{});
  }
}

void factorized_pool_cpu(const at::Tensor& x, const at::Tensor& y, int64_t k,
                         const EpilogueOptions& opts, at::Tensor& out, at::Tensor& norm) {
  const int64_t rows = out.size(0), o = out.size(1);
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_factorized_pool_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* np = opts.l2_normalize ? norm.data_ptr<acc_t>() : nullptr;
    dispatch_group(k, [&](auto K) {
      factorized_rows<decltype(K)::value>(x.const_data_ptr<scalar_t>(),
                                          y.const_data_ptr<scalar_t>(), rows, o, k, opts,
                                          out.data_ptr<scalar_t>(), np);
    });
  });
}

void factorized_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                  const at::Tensor& out, const at::Tensor& norm, int64_t k,
                                  bool signed_sqrt, bool l2, at::Tensor& grad_x,
                                  at::Tensor& grad_y) {
  const int64_t rows = out.size(0), o = out.size(1);
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_factorized_pool_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* np = l2 ? norm.const_data_ptr<acc_t>() : nullptr;
    dispatch_group(k, [&](auto K) {
      factorized_backward_rows<decltype(K)::value>(
          grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          y.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), np, rows, o, k, signed_sqrt,
          l2, grad_x.data_ptr<scalar_t>(), grad_y.data_ptr<scalar_t>());
    });
  });
}

constexpr Loops kCpuLoops{&symmetric_gram_cpu,
                          /*gemm_in_input_dtype=*/false,
                          /*gemm_chunk_elements=*/int64_t(1) << 20,
                          &epilogue_cpu,
                          &epilogue_backward_cpu,
                          &tensor_sketch_cpu,
                          &symmetric_tensor_sketch_cpu,
                          &tensor_sketch_backward_cpu,
                          &segment_product_sum_cpu,
                          &factorized_pool_cpu,
                          &factorized_pool_backward_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(bilinear_loops, kCpu, kCpuLoops);

}  // namespace cvops::bilinear
