// CUDA loops of the bilinear family. Everything is deterministic: row reductions (L2 norms, the
// backward's out·grad) are block partials summed in a fixed order by a second small kernel, never
// float atomics; the Tensor Sketch is a gather (each output bin reads its contributions through a
// CSR index of h2 built with at::sort/at::searchsorted), so no two threads add into one bin.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>

#include <algorithm>

#include "bilinear/bilinear.h"
#include "bilinear/epilogue_math.h"
#include "common/checks.h"
#include "common/cuda_reduce.cuh"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "common/symmetric_gram.h"

namespace cvops::bilinear {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per block in a row-reduction pass

// ---------------------------------------------------------------------------- pooled values
// z(row, i): the pooled value before the epilogue, read from a dense [R, N] tensor or formed from
// MFB's groups (Σ_{t<k} x·y) on the fly.
template <typename acc_t>
struct DenseValues {
  const acc_t* z;
  int64_t n;
  acc_t alpha;
  __device__ acc_t operator()(int64_t row, int64_t i) const { return alpha * z[row * n + i]; }
};

template <typename scalar_t, typename acc_t>
struct GroupValues {
  const scalar_t* x;
  const scalar_t* y;
  int64_t n, k;  // n = o groups of k per row
  __device__ acc_t operator()(int64_t row, int64_t j) const {
    const int64_t base = (row * n + j) * k;
    acc_t s = 0;
    for (int64_t t = 0; t < k; ++t)
      s += static_cast<acc_t>(x[base + t]) * static_cast<acc_t>(y[base + t]);
    return s;
  }
};

// partials[row·chunks + c] = Σ u² over chunk c of the row, u = signed_sqrt(z) (u² = |z| + eps, z ≠ 0).
template <typename acc_t, typename Values>
__global__ void __launch_bounds__(kThreads)
    sum_squares_kernel(Values values, int64_t n, int64_t chunks, bool signed_sqrt, acc_t eps,
                       acc_t* partials) {
  const int64_t task = blockIdx.x, row = task / chunks, begin = (task % chunks) * kChunk;
  const int64_t end = min(n, begin + kChunk);
  acc_t s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const acc_t v = values(row, i);
    s += signed_sqrt ? (v != acc_t(0) ? fabs(v) + eps : acc_t(0)) : v * v;
  }
  s = block_reduce<kThreads>(s);
  if (threadIdx.x == 0) partials[task] = s;
}

// total[row] = Σ_c partials[row, c] (√ of it when `root`), in a fixed order: one block per row.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    reduce_rows_kernel(const acc_t* partials, int64_t chunks, bool root, acc_t* total) {
  const int64_t row = blockIdx.x;
  acc_t s = 0;
  for (int64_t c = threadIdx.x; c < chunks; c += kThreads) s += partials[row * chunks + c];
  s = block_reduce<kThreads>(s);
  if (threadIdx.x == 0) total[row] = root ? sqrt(s) : s;
}

template <typename scalar_t, typename acc_t, typename Values>
__global__ void write_out_kernel(Values values, int64_t rows, int64_t n, bool signed_sqrt,
                                 acc_t eps, const acc_t* norm, scalar_t* out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / n, i = e % n;
    const acc_t inv = norm ? acc_t(1) / clamped_norm(norm[row]) : acc_t(1);
    out[e] = static_cast<scalar_t>(maybe_signed_sqrt(values(row, i), eps, signed_sqrt) * inv);
  }
}

// out = L2(signed_sqrt(values)) and norm, for any source of pooled values: three launches, all fixed-order.
template <typename scalar_t, typename acc_t, typename Values>
void run_epilogue(const Values& values, int64_t rows, int64_t n, const EpilogueOptions& opts,
                  at::Tensor& out, at::Tensor& norm) {
  auto stream = at::cuda::getCurrentCUDAStream();
  const auto eps = static_cast<acc_t>(opts.eps);
  acc_t* np = nullptr;
  if (opts.l2_normalize) {
    const int64_t chunks = ceil_div<int64_t>(n, kChunk);
    auto partials = at::empty({rows * chunks}, norm.options());
    sum_squares_kernel<acc_t><<<static_cast<unsigned>(rows * chunks), kThreads, 0, stream>>>(
        values, n, chunks, opts.signed_sqrt, eps, partials.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    np = norm.data_ptr<acc_t>();
    reduce_rows_kernel<acc_t><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        partials.data_ptr<acc_t>(), chunks, /*root=*/true, np);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  write_out_kernel<scalar_t, acc_t>
      <<<grid_stride_blocks(rows * n, kThreads), kThreads, 0, stream>>>(
          values, rows, n, opts.signed_sqrt, eps, np, out.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_grid(const char* op, int64_t blocks) {
  CVOPS_CHECK(blocks <= int64_t(INT32_MAX), op, "too many rows for one launch (", blocks,
              " blocks)");
}

void epilogue_cuda(const at::Tensor& z, double alpha, const EpilogueOptions& opts, at::Tensor& out,
                   at::Tensor& norm) {
  const int64_t rows = z.size(0), n = z.size(1);
  check_grid("bilinear epilogue", rows * ceil_div<int64_t>(n, kChunk));
  c10::cuda::CUDAGuard guard(z.device());
  CVOPS_DISPATCH_FLOATING(out.scalar_type(), "cvops_bilinear_epilogue_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const DenseValues<acc_t> values{z.const_data_ptr<acc_t>(), n, static_cast<acc_t>(alpha)};
    run_epilogue<scalar_t, acc_t>(values, rows, n, opts, out, norm);
  });
}

// dot[row] = Σ out·grad over the row (the L2 backward's projection), fixed-order like the norm.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    dot_partials_kernel(const scalar_t* out, const scalar_t* grad, int64_t n, int64_t chunks,
                        acc_t* partials) {
  const int64_t task = blockIdx.x, row = task / chunks, begin = (task % chunks) * kChunk;
  const int64_t end = min(n, begin + kChunk);
  acc_t s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    s += static_cast<acc_t>(out[row * n + i]) * static_cast<acc_t>(grad[row * n + i]);
  }
  s = block_reduce<kThreads>(s);
  if (threadIdx.x == 0) partials[task] = s;
}

template <typename scalar_t, typename acc_t>
at::Tensor row_dots(const at::Tensor& out, const at::Tensor& grad, int64_t rows, int64_t n) {
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t chunks = ceil_div<int64_t>(n, kChunk);
  check_grid("bilinear epilogue backward", rows * chunks);
  const at::TensorOptions acc_options = out.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor partials = at::empty({rows * chunks}, acc_options);
  at::Tensor dots = at::empty({rows}, acc_options);
  dot_partials_kernel<scalar_t, acc_t>
      <<<static_cast<unsigned>(rows * chunks), kThreads, 0, stream>>>(
          out.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), n, chunks,
          partials.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  reduce_rows_kernel<acc_t><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      partials.data_ptr<acc_t>(), chunks, /*root=*/false, dots.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dots;
}

// The per-row terms of epilogue_grad.
template <typename acc_t>
struct RowGrad {
  const acc_t* norm;  // null without L2
  const acc_t* dot;
  bool signed_sqrt;
  __device__ acc_t operator()(int64_t row, acc_t g, acc_t out) const {
    if (!norm) return epilogue_grad(g, out, false, acc_t(0), acc_t(0), signed_sqrt);
    return epilogue_grad(g, out, true, norm[row], dot[row], signed_sqrt);
  }
};

// The RowGrad of grad and out [rows, n]; with L2 it reads the forward's norm and the row dots,
// which `dots` keeps alive until the kernel using it has been queued.
template <typename scalar_t, typename acc_t>
RowGrad<acc_t> row_grad(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& norm,
                        bool signed_sqrt, bool l2, at::Tensor& dots) {
  RowGrad<acc_t> rg{nullptr, nullptr, signed_sqrt};
  if (l2) {
    dots = row_dots<scalar_t, acc_t>(out, grad, out.size(0), out.size(1));
    rg.norm = norm.const_data_ptr<acc_t>();
    rg.dot = dots.const_data_ptr<acc_t>();
  }
  return rg;
}

template <typename scalar_t, typename acc_t>
__global__ void epilogue_grad_kernel(const scalar_t* grad, const scalar_t* out, RowGrad<acc_t> rg,
                                     int64_t rows, int64_t n, acc_t* grad_z) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * n;
       e += int64_t(gridDim.x) * blockDim.x) {
    grad_z[e] = rg(e / n, static_cast<acc_t>(grad[e]), static_cast<acc_t>(out[e]));
  }
}

void epilogue_backward_cuda(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& norm,
                            bool signed_sqrt, bool l2, at::Tensor& grad_z) {
  const int64_t rows = out.size(0), n = out.size(1);
  c10::cuda::CUDAGuard guard(out.device());
  CVOPS_DISPATCH_FLOATING(out.scalar_type(), "cvops_bilinear_epilogue_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor dots;
    const auto rg = row_grad<scalar_t, acc_t>(grad, out, norm, signed_sqrt, l2, dots);
    epilogue_grad_kernel<scalar_t, acc_t>
        <<<grid_stride_blocks(rows * n, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), rg, rows, n,
            grad_z.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// ---------------------------------------------------------------------------- Tensor Sketch
// sketch[b, k] = Σ_a s1[a] Σ_{c: h2[c] = (k − h1[a]) mod d} s2[c]·G[b, a, c]: a gather per bin over
// h2's CSR (cols2 sorted by bin, offsets2 [d + 1]); d·C index reads per sample, no atomics.
template <typename T>
__global__ void tensor_sketch_kernel(const T* gram, int64_t B, int64_t C, int64_t D, int64_t d,
                                     const int64_t* h1, const T* s1, const int64_t* offsets2,
                                     const int64_t* cols2, const T* signs2, T* sketch) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < B * d;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / d, k = e % d;
    const T* g = gram + b * C * D;
    T acc = 0;
    for (int64_t a = 0; a < C; ++a) {
      int64_t j = k - h1[a];
      j += j < 0 ? d : 0;
      const int64_t begin = offsets2[j], end = offsets2[j + 1];
      if (begin == end) continue;
      T part = 0;
      for (int64_t t = begin; t < end; ++t) part += signs2[t] * g[a * D + cols2[t]];
      acc += s1[a] * part;
    }
    sketch[e] = acc;
  }
}

void tensor_sketch_cuda(const at::Tensor& gram, const at::Tensor& h1, const at::Tensor& s1,
                        const at::Tensor& h2, const at::Tensor& s2, at::Tensor& sketch) {
  const int64_t B = gram.size(0), C = gram.size(1), D = gram.size(2), d = sketch.size(1);
  c10::cuda::CUDAGuard guard(gram.device());
  // CSR of h2: the columns of each bin, in a stable (index) order so the sums are reproducible.
  const auto sorted = at::sort(h2, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const auto& bins = std::get<0>(sorted);
  const auto& cols = std::get<1>(sorted);
  const auto offsets = at::searchsorted(bins, at::arange(d + 1, h2.options()));
  const auto signs = at::index_select(s2, 0, cols).contiguous();
  AT_DISPATCH_FLOATING_TYPES(gram.scalar_type(), "cvops_tensor_sketch_cuda", [&] {
    tensor_sketch_kernel<scalar_t>
        <<<grid_stride_blocks(B * d, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            gram.const_data_ptr<scalar_t>(), B, C, D, d, h1.const_data_ptr<int64_t>(),
            s1.const_data_ptr<scalar_t>(), offsets.const_data_ptr<int64_t>(),
            cols.const_data_ptr<int64_t>(), signs.const_data_ptr<scalar_t>(),
            sketch.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename T>
__global__ void tensor_sketch_backward_kernel(const T* grad, int64_t B, int64_t C, int64_t D,
                                              int64_t d, const int64_t* h1, const T* s1,
                                              const int64_t* h2, const T* s2, T* grad_gram) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < B * C * D;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % D, a = (e / D) % C, b = e / (C * D);
    int64_t k = h1[a] + h2[c];
    k -= k >= d ? d : 0;
    grad_gram[e] = s1[a] * s2[c] * grad[b * d + k];
  }
}

void tensor_sketch_backward_cuda(const at::Tensor& grad, const at::Tensor& h1, const at::Tensor& s1,
                                 const at::Tensor& h2, const at::Tensor& s2,
                                 at::Tensor& grad_gram) {
  const int64_t B = grad_gram.size(0), C = grad_gram.size(1), D = grad_gram.size(2),
                d = grad.size(1);
  c10::cuda::CUDAGuard guard(grad.device());
  AT_DISPATCH_FLOATING_TYPES(grad_gram.scalar_type(), "cvops_tensor_sketch_backward_cuda", [&] {
    tensor_sketch_backward_kernel<scalar_t><<<grid_stride_blocks(B * C * D, kThreads), kThreads, 0,
                                              at::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), B, C, D, d, h1.const_data_ptr<int64_t>(),
        s1.const_data_ptr<scalar_t>(), h2.const_data_ptr<int64_t>(), s2.const_data_ptr<scalar_t>(),
        grad_gram.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// ---------------------------------------------------------------------------- GEMM epilogues
// out[b, k] += Σ_rows-of-b Σ_j σ_j a·b: one thread per (sample, k) adds its rows in order.
template <typename scalar_t, typename acc_t>
__global__ void segment_product_sum_kernel(const scalar_t* a, const scalar_t* bm, int64_t L,
                                           int64_t row0, int64_t rows_per_sample, int64_t K,
                                           int64_t group, int64_t num_positive, int64_t b_first,
                                           int64_t b_last, acc_t* out) {
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (k >= K) return;
  for (int64_t b = b_first + blockIdx.y; b <= b_last; b += gridDim.y) {
    const int64_t r_begin = max(row0, b * rows_per_sample) - row0;
    const int64_t r_end = min(row0 + L, (b + 1) * rows_per_sample) - row0;
    acc_t s = 0;
    for (int64_t r = r_begin; r < r_end; ++r) {
      const int64_t base = (r * K + k) * group;
      for (int64_t j = 0; j < group; ++j) {
        const acc_t v = static_cast<acc_t>(a[base + j]) * static_cast<acc_t>(bm[base + j]);
        s += j < num_positive ? v : -v;
      }
    }
    out[b * K + k] += s;
  }
}

void segment_product_sum_cuda(const at::Tensor& a, const at::Tensor& b, int64_t row0,
                              int64_t rows_per_sample, int64_t group, int64_t num_positive,
                              at::Tensor& out) {
  const int64_t L = a.size(0), K = out.size(1);
  if (L == 0 || K == 0) return;
  const int64_t b_first = row0 / rows_per_sample, b_last = (row0 + L - 1) / rows_per_sample;
  c10::cuda::CUDAGuard guard(a.device());
  const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(K, kThreads)),
                  static_cast<unsigned>(std::min<int64_t>(b_last - b_first + 1, kMaxGridYZ)));
  CVOPS_DISPATCH_FLOATING(a.scalar_type(), "cvops_segment_product_sum_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    segment_product_sum_kernel<scalar_t, acc_t>
        <<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), L, row0, rows_per_sample, K,
            group, num_positive, b_first, b_last, out.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// ---------------------------------------------------------------------------- MFB
void factorized_pool_cuda(const at::Tensor& x, const at::Tensor& y, int64_t k,
                          const EpilogueOptions& opts, at::Tensor& out, at::Tensor& norm) {
  const int64_t rows = out.size(0), o = out.size(1);
  check_grid("factorized_bilinear_pool", rows * ceil_div<int64_t>(o, kChunk));
  c10::cuda::CUDAGuard guard(x.device());
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_factorized_pool_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const GroupValues<scalar_t, acc_t> values{x.const_data_ptr<scalar_t>(),
                                              y.const_data_ptr<scalar_t>(), o, k};
    run_epilogue<scalar_t, acc_t>(values, rows, o, opts, out, norm);
  });
}

// One thread per group j: dz from the epilogue's gradient, then k products per input.
template <typename scalar_t, typename acc_t>
__global__ void factorized_backward_kernel(const scalar_t* grad, const scalar_t* out,
                                           RowGrad<acc_t> rg, const scalar_t* x, const scalar_t* y,
                                           int64_t rows, int64_t o, int64_t k, scalar_t* grad_x,
                                           scalar_t* grad_y) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * o;
       e += int64_t(gridDim.x) * blockDim.x) {
    const acc_t dz = rg(e / o, static_cast<acc_t>(grad[e]), static_cast<acc_t>(out[e]));
    for (int64_t t = e * k; t < (e + 1) * k; ++t) {
      grad_x[t] = static_cast<scalar_t>(dz * static_cast<acc_t>(y[t]));
      grad_y[t] = static_cast<scalar_t>(dz * static_cast<acc_t>(x[t]));
    }
  }
}

void factorized_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                   const at::Tensor& out, const at::Tensor& norm, int64_t k,
                                   bool signed_sqrt, bool l2, at::Tensor& grad_x,
                                   at::Tensor& grad_y) {
  const int64_t rows = out.size(0), o = out.size(1);
  c10::cuda::CUDAGuard guard(x.device());
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_factorized_pool_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor dots;
    const auto rg = row_grad<scalar_t, acc_t>(grad, out, norm, signed_sqrt, l2, dots);
    factorized_backward_kernel<scalar_t, acc_t>
        <<<grid_stride_blocks(rows * o, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), rg,
            x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), rows, o, k,
            grad_x.data_ptr<scalar_t>(), grad_y.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The pooled Gram of y = x in opmath, as the y ≠ x path's bmm writes it: a half Gram of large
// sums would overflow before the epilogue.
at::Tensor pooled_gram_cuda(const char* op, const at::Tensor& features, double scale) {
  const int64_t B = features.size(0), C = features.size(1);
  auto gram = at::empty({B, C, C}, features.options().dtype(opmath_dtype(features.scalar_type())));
  symmetric_gram_into_cuda(op, features, scale, gram);
  return gram;
}

constexpr Loops kCudaLoops{&pooled_gram_cuda,
                           /*gemm_in_input_dtype=*/true,
                           /*gemm_chunk_elements=*/int64_t(1) << 25,
                           &epilogue_cuda,
                           &epilogue_backward_cuda,
                           &tensor_sketch_cuda,
                           /*symmetric_tensor_sketch=*/nullptr,
                           &tensor_sketch_backward_cuda,
                           &segment_product_sum_cuda,
                           &factorized_pool_cuda,
                           &factorized_pool_backward_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(bilinear_loops, kCuda, kCudaLoops);

}  // namespace cvops::bilinear
