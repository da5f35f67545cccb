// CUDA loops of the instance_norm family: launch planning and the forward / backward entry points.
// Statistics per (sample, channel) over n = H·W in opmath (float for half/bfloat16/float, double
// for double): Welford within a thread, Chan's parallel merge across threads and blocks
// (instance_norm_math.cuh). The kernels of each layout are in instance_norm_nchw.cuh and
// instance_norm_channels_last.cuh; when the independent blocks cannot fill the GPU, the reduced
// range is split over blocks and merged in a fixed order (common/cuda_split.cuh). Every reduction
// runs in a fixed order and there are no float atomics, so results do not depend on scheduling.
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>

#include "common/checks.h"
#include "common/cuda_split.cuh"
#include "common/cuda_utils.cuh"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "instance_norm/instance_norm.h"
#include "instance_norm/instance_norm_channels_last.cuh"
#include "instance_norm/instance_norm_math.cuh"
#include "instance_norm/instance_norm_nchw.cuh"

namespace cvops::instance_norm {
namespace {

constexpr const char* kOp = "conditional_instance_norm";
constexpr int64_t kChunkAlign = 8;  // split chunks start on a pack boundary of every dtype
constexpr int kResidentThreadsPerSm = 2048;  // what "fills the GPU" means when deciding to split
// NCHW blocks: a power of two in [kPlaneMinThreads, kPlaneMaxThreads], about kElementsPerThread
// values each.
constexpr int kPlaneMinThreads = 32;
constexpr int64_t kElementsPerThread = 16;
constexpr int64_t kMinPlaneChunk = 4096;  // smallest plane range worth a block of its own
constexpr int64_t kMinRowSteps = 8;  // channels_last: positions per thread before splitting

// ---------------------------------------------------------------------------------------------
// Launch planning

int64_t pow2_ceil(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

int64_t pow2_floor(int64_t v) {
  int64_t p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

// Blocks of `threads` that occupy every SM once.
int64_t blocks_to_fill(int threads) {
  return ceil_div<int64_t>(int64_t(num_sms()) * kResidentThreadsPerSm, threads);
}

void check_grid(int64_t blocks) {
  CVOPS_CHECK(blocks <= std::numeric_limits<int>::max(), kOp,
              "too many (sample, channel) planes for the CUDA kernel (", blocks, " blocks)");
}

struct PlanePlan {
  int threads, splits;
  int64_t chunk;  // plane values per split, a multiple of kChunkAlign
};

int plane_threads(int64_t values) {
  return static_cast<int>(std::clamp<int64_t>(pow2_ceil(ceil_div(values, kElementsPerThread)),
                                              kPlaneMinThreads, kPlaneMaxThreads));
}

// One block per plane, unless B·C blocks leave SMs idle: then planes are split into chunks of at
// least kMinPlaneChunk values.
PlanePlan plan_planes(int64_t planes, int64_t n) {
  const int threads = plane_threads(n);
  const SplitPlan split =
      plan_split(planes, blocks_to_fill(threads), n, kMinPlaneChunk, kChunkAlign);
  PlanePlan plan{threads, static_cast<int>(split.splits), split.chunk};
  if (plan.splits > 1) plan.threads = plane_threads(split.chunk);
  check_grid(planes * plan.splits);
  return plan;
}

struct ChannelsLastPlan {
  ChannelsLastShape shape;
  int threads;
  int64_t blocks;
};

// Channel tiles of at most kMaxTileGroups packs, balanced; as many rows as fit in the block;
// positions split when B × tiles blocks leave SMs idle, keeping ≥ kMinRowSteps positions per row.
ChannelsLastPlan plan_channels_last(int64_t batch, int64_t channels, int64_t positions, int vec) {
  const int64_t groups = channels / vec;
  const int64_t tiles = ceil_div<int64_t>(groups, kMaxTileGroups);
  const int tile_groups = static_cast<int>(ceil_div(groups, tiles));
  const int rows = static_cast<int>(pow2_floor(kChannelThreads / tile_groups));
  const int threads = tile_groups * rows;
  const int64_t base = batch * tiles;
  const SplitPlan split =
      plan_split(base, blocks_to_fill(threads), positions, rows * kMinRowSteps, /*align=*/1);
  ChannelsLastShape shape{
      channels,    positions, split.chunk, static_cast<int>(split.splits), static_cast<int>(tiles),
      tile_groups, rows};
  const int64_t blocks = base * shape.splits;
  check_grid(blocks);
  return {shape, threads, blocks};
}

// ---------------------------------------------------------------------------------------------
// Launchers

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
struct ForwardArgs {
  const scalar_t* x;
  const acc_t* gamma;
  const acc_t* beta;
  scalar_t* out;
  acc_t* mean;
  acc_t* rstd;
  acc_t eps;
  bool relu;
};

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
struct BackwardArgs {
  const scalar_t* dy;
  const scalar_t* x;
  const scalar_t* out;
  const acc_t* mean;
  const acc_t* rstd;
  const acc_t* gamma;
  scalar_t* dx;
  acc_t* grad_gamma;
  acc_t* grad_beta;
  bool relu;
};

template <typename scalar_t>
constexpr int pack_width() {
  return kPackBytes / sizeof(scalar_t);
}

// What every launcher needs besides the data pointers.
struct Problem {
  int64_t batch, channels, positions;  // B, C, n = H·W
  at::TensorOptions acc_options;  // for workspaces (opmath dtype, x's device)
  cudaStream_t stream;
};

template <int kVec, typename scalar_t, typename acc_t>
void forward_planes(const ForwardArgs<scalar_t>& a, const Problem& pb) {
  const int64_t planes = pb.batch * pb.channels, n = pb.positions;
  const PlanePlan p = plan_planes(planes, n);
  const int64_t blocks = planes * p.splits;  // partials: (mean, M2) per block
  run_split<acc_t>(
      p.splits, 2, blocks, pb.acc_options,
      [&] {
        plane_forward_kernel<kVec, scalar_t, acc_t>
            <<<static_cast<unsigned>(planes), p.threads, 0, pb.stream>>>(
                a.x, a.gamma, a.beta, a.eps, a.relu, n, a.out, a.mean, a.rstd);
      },
      [&](acc_t* partial_mean) {
        plane_partial_stats_kernel<kVec, scalar_t, acc_t>
            <<<static_cast<unsigned>(blocks), p.threads, 0, pb.stream>>>(
                a.x, n, p.chunk, p.splits, partial_mean, partial_mean + blocks);
      },
      [&](const acc_t* partial_mean) {
        plane_normalize_kernel<kVec, scalar_t, acc_t>
            <<<static_cast<unsigned>(blocks), p.threads, 0, pb.stream>>>(
                a.x, a.gamma, a.beta, partial_mean, partial_mean + blocks, a.eps, a.relu, n,
                p.chunk, p.splits, a.out, a.mean, a.rstd);
      });
}

template <int kVec, typename scalar_t, typename acc_t>
void forward_channels_last(const ForwardArgs<scalar_t>& a, const Problem& pb) {
  const ChannelsLastPlan p = plan_channels_last(pb.batch, pb.channels, pb.positions, kVec);
  const ChannelsLastShape& s = p.shape;
  const auto grid = static_cast<unsigned>(p.blocks);
  const int64_t partials = pb.batch * s.splits * pb.channels;  // (mean, M2) per split and channel
  run_split<acc_t>(
      s.splits, 2, partials, pb.acc_options,
      [&] {
        channels_forward_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
            a.x, a.gamma, a.beta, a.eps, a.relu, s, a.out, a.mean, a.rstd);
      },
      [&](acc_t* partial_mean) {
        channels_partial_stats_kernel<kVec, scalar_t, acc_t>
            <<<grid, p.threads, 0, pb.stream>>>(a.x, s, partial_mean, partial_mean + partials);
      },
      [&](const acc_t* partial_mean) {
        channels_normalize_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
            a.x, a.gamma, a.beta, partial_mean, partial_mean + partials, a.eps, a.relu, s, a.out,
            a.mean, a.rstd);
      });
}

template <int kVec, typename scalar_t, typename acc_t>
void backward_planes(const BackwardArgs<scalar_t>& a, const Problem& pb) {
  const int64_t planes = pb.batch * pb.channels, n = pb.positions;
  const PlanePlan p = plan_planes(planes, n);
  const int64_t blocks = planes * p.splits;  // partials: (Σdy', Σdy'·(x − mean)) per block
  run_split<acc_t>(
      p.splits, 2, blocks, pb.acc_options,
      [&] {
        plane_backward_kernel<kVec, scalar_t, acc_t>
            <<<static_cast<unsigned>(planes), p.threads, 0, pb.stream>>>(
                a.dy, a.x, a.out, a.mean, a.rstd, a.gamma, a.relu, n, a.dx, a.grad_gamma,
                a.grad_beta);
      },
      [&](acc_t* partial_dy) {
        plane_partial_grad_kernel<kVec, scalar_t, acc_t>
            <<<static_cast<unsigned>(blocks), p.threads, 0, pb.stream>>>(
                a.dy, a.x, a.out, a.mean, a.relu, n, p.chunk, p.splits, partial_dy,
                partial_dy + blocks);
      },
      [&](const acc_t* partial_dy) {
        plane_apply_grad_kernel<kVec, scalar_t, acc_t>
            <<<static_cast<unsigned>(blocks), p.threads, 0, pb.stream>>>(
                a.dy, a.x, a.out, a.mean, a.rstd, a.gamma, partial_dy, partial_dy + blocks, a.relu,
                n, p.chunk, p.splits, a.dx, a.grad_gamma, a.grad_beta);
      });
}

template <int kVec, typename scalar_t, typename acc_t>
void backward_channels_last(const BackwardArgs<scalar_t>& a, const Problem& pb) {
  const ChannelsLastPlan p = plan_channels_last(pb.batch, pb.channels, pb.positions, kVec);
  const ChannelsLastShape& s = p.shape;
  const auto grid = static_cast<unsigned>(p.blocks);
  const int64_t partials = pb.batch * s.splits * pb.channels;  // two sums per split and channel
  run_split<acc_t>(
      s.splits, 2, partials, pb.acc_options,
      [&] {
        channels_backward_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
            a.dy, a.x, a.out, a.mean, a.rstd, a.gamma, a.relu, s, a.dx, a.grad_gamma, a.grad_beta);
      },
      [&](acc_t* partial_dy) {
        channels_partial_grad_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
            a.dy, a.x, a.out, a.mean, a.relu, s, partial_dy, partial_dy + partials);
      },
      [&](const acc_t* partial_dy) {
        channels_apply_grad_kernel<kVec, scalar_t, acc_t><<<grid, p.threads, 0, pb.stream>>>(
            a.dy, a.x, a.out, a.mean, a.rstd, a.gamma, partial_dy, partial_dy + partials, a.relu, s,
            a.dx, a.grad_gamma, a.grad_beta);
      });
}

// 16-byte packs need aligned pointers and rows (NCHW planes, channels_last channel runs) whose
// length is a multiple of the pack.
template <typename scalar_t>
bool use_packs(std::initializer_list<const void*> pointers, const Problem& pb, bool channels_last) {
  const int64_t row = channels_last ? pb.channels : pb.positions;
  return row % pack_width<scalar_t>() == 0 &&
         std::all_of(pointers.begin(), pointers.end(), [](const void* p) {
           return reinterpret_cast<std::uintptr_t>(p) % kPackBytes == 0;
         });
}

void forward_cuda(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, double eps,
                  bool relu, bool channels_last, at::Tensor& out, at::Tensor& mean,
                  at::Tensor& rstd) {
  c10::cuda::CUDAGuard guard(x.device());
  const Problem pb{x.size(0), x.size(1), x.size(2) * x.size(3), mean.options(),
                   at::cuda::getCurrentCUDAStream()};
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_instance_norm_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kWidth = pack_width<scalar_t>();
    const ForwardArgs<scalar_t> a{x.const_data_ptr<scalar_t>(), gamma.const_data_ptr<acc_t>(),
                                  beta.const_data_ptr<acc_t>(), out.data_ptr<scalar_t>(),
                                  mean.data_ptr<acc_t>(),       rstd.data_ptr<acc_t>(),
                                  static_cast<acc_t>(eps),      relu};
    const bool packs = use_packs<scalar_t>({a.x, a.out}, pb, channels_last);
    if (channels_last) {
      if (packs) forward_channels_last<kWidth, scalar_t, acc_t>(a, pb);
      else forward_channels_last<1, scalar_t, acc_t>(a, pb);
    } else {
      if (packs) forward_planes<kWidth, scalar_t, acc_t>(a, pb);
      else forward_planes<1, scalar_t, acc_t>(a, pb);
    }
  });
}

void backward_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& out,
                   const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& gamma,
                   bool relu, bool channels_last, at::Tensor& grad_x, at::Tensor& grad_gamma,
                   at::Tensor& grad_beta) {
  c10::cuda::CUDAGuard guard(x.device());
  const Problem pb{x.size(0), x.size(1), x.size(2) * x.size(3), mean.options(),
                   at::cuda::getCurrentCUDAStream()};
  CVOPS_DISPATCH_FLOATING(x.scalar_type(), "cvops_instance_norm_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kWidth = pack_width<scalar_t>();
    const BackwardArgs<scalar_t> a{
        grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
        out.const_data_ptr<scalar_t>(),      mean.const_data_ptr<acc_t>(),
        rstd.const_data_ptr<acc_t>(),        gamma.const_data_ptr<acc_t>(),
        grad_x.data_ptr<scalar_t>(),         grad_gamma.data_ptr<acc_t>(),
        grad_beta.data_ptr<acc_t>(),         relu};
    const bool packs = use_packs<scalar_t>({a.dy, a.x, a.out, a.dx}, pb, channels_last);
    if (channels_last) {
      if (packs) backward_channels_last<kWidth, scalar_t, acc_t>(a, pb);
      else backward_channels_last<1, scalar_t, acc_t>(a, pb);
    } else {
      if (packs) backward_planes<kWidth, scalar_t, acc_t>(a, pb);
      else backward_planes<1, scalar_t, acc_t>(a, pb);
    }
  });
}

constexpr Loops kCudaLoops{&forward_cuda, &backward_cuda};

}  // namespace

CVOPS_REGISTER_LOOPS(instance_norm_loops, kCuda, kCudaLoops);

}  // namespace cvops::instance_norm
