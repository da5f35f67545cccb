// Schemas of the boxes family and its op bodies: validation, broadcasting, the per-box fields and
// the outputs, for every device; the devices supply the loops over pairs (boxes.h).
#include "boxes/boxes.h"

#include <ATen/ExpandUtils.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/atan.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/stack.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "common/checks.h"
#include "common/choice.h"
#include "common/cpu_memory.h"
#include "common/dispatch.h"
#include "common/loop_table.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  m.def("box_iou(Tensor boxes1, Tensor boxes2, str kind, str fmt) -> Tensor");
  m.def("box_iou_aligned(Tensor boxes1, Tensor boxes2, str kind, str fmt) -> Tensor");
  m.def(
      "_box_iou_aligned_backward(Tensor grad, Tensor boxes1, Tensor boxes2, str kind, str fmt) "
      "-> (Tensor, Tensor)");
}

namespace cvops::boxes {
namespace {


IouKind parse_kind(const char* op, std::string_view kind) {
  return parse_choice<IouKind>(op, "kind", kind,
                               {{"iou", IouKind::kIou},
                                {"giou", IouKind::kGiou},
                                {"diou", IouKind::kDiou},
                                {"ciou", IouKind::kCiou}});
}

// [..., n, kBoxFields] in opmath, corners and areas formed as torchvision forms them, so the
// values match it to the last bit.
at::Tensor box_fields(const at::Tensor& boxes, BoxFormat fmt) {
  const auto b = boxes.to(opmath_dtype(boxes.scalar_type()));
  const auto c0 = b.select(-1, 0), c1 = b.select(-1, 1), c2 = b.select(-1, 2), c3 = b.select(-1, 3);
  at::Tensor x1, y1, x2, y2, area;
  if (fmt == BoxFormat::kXyxy) {
    x1 = c0, y1 = c1, x2 = c2, y2 = c3;
    area = (c2 - c0) * (c3 - c1);
  } else if (fmt == BoxFormat::kXywh) {
    x1 = c0, y1 = c1, x2 = c0 + c2, y2 = c1 + c3;
    area = c2 * c3;
  } else {
    x1 = c0 - c2 / 2, y1 = c1 - c3 / 2, x2 = c0 + c2 / 2, y2 = c1 + c3 / 2;
    area = c2 * c3;
  }
  const auto cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
  const auto aspect = at::atan((x2 - x1) / (y2 - y1));
  return at::stack({x1, y1, x2, y2, area, cx, cy, aspect}, -1).contiguous();
}

// Checks two box tensors [..., n, 4] (set_dims = 2) or [..., 4] (set_dims = 1) and returns the
// broadcast shape of their leading dims.
std::vector<int64_t> broadcast_batch(const at::Tensor& boxes1, const at::Tensor& boxes2,
                                     int64_t set_dims, const char* op) {
  const char* layout =
      set_dims == 2 ? " must have shape [..., n, 4], got " : " must have shape [..., 4], got ";
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"boxes1", boxes1},
                                std::pair<const char*, const at::Tensor&>{"boxes2", boxes2}}) {
    check_floating(op, name, t);
    CVOPS_CHECK(t.dim() >= set_dims && t.size(-1) == 4, op, name, layout, t.sizes());
  }
  check_same_device(op, "boxes2", boxes2, "boxes1", boxes1);
  CVOPS_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), op,
              "boxes1 and boxes2 must have the same dtype, got ", boxes1.scalar_type(), " and ",
              boxes2.scalar_type());
  const auto batch1 = boxes1.sizes().slice(0, boxes1.dim() - set_dims);
  const auto batch2 = boxes2.sizes().slice(0, boxes2.dim() - set_dims);
  try {
    return at::infer_size(batch1, batch2);
  } catch (const c10::Error&) {
    CVOPS_CHECK(false, op, "the leading dims of boxes1 ", batch1, " and boxes2 ", batch2,
                " do not broadcast");
  }
  return {};
}

// Validates the pair, broadcasts the leading dims: fields1 [sets, N, 8], fields2 [sets, M, 8]
// (contiguous opmath) and the output shape [..., N, M].
struct PairwiseProblem {
  at::Tensor fields1, fields2;
  std::vector<int64_t> out_shape;
};

PairwiseProblem pairwise_problem(const at::Tensor& boxes1, const at::Tensor& boxes2, BoxFormat fmt,
                                 const char* op) {
  const auto batch = broadcast_batch(boxes1, boxes2, /*set_dims=*/2, op);
  const int64_t N = boxes1.size(-2), M = boxes2.size(-2);
  const int64_t pairs_of_sets = c10::multiply_integers(batch);
  auto expand = [&](const at::Tensor& t, int64_t n) {
    std::vector<int64_t> shape(batch);
    shape.push_back(n);
    shape.push_back(4);
    return t.expand(shape).reshape({pairs_of_sets, n, 4});
  };
  PairwiseProblem problem{box_fields(expand(boxes1, N), fmt), box_fields(expand(boxes2, M), fmt),
                          batch};
  problem.out_shape.push_back(N);
  problem.out_shape.push_back(M);
  return problem;
}

BoxFormat parse_format(const char* op, std::string_view fmt) {
  return parse_choice<BoxFormat>(
      op, "fmt", fmt,
      {{"xyxy", BoxFormat::kXyxy}, {"xywh", BoxFormat::kXywh}, {"cxcywh", BoxFormat::kCxcywh}});
}

// Both sets broadcast to one batch shape and flattened to [pairs, 4] (contiguous opmath); `batch`
// is the output shape.
struct AlignedProblem {
  at::Tensor boxes1, boxes2;
  std::vector<int64_t> batch;
};

AlignedProblem aligned_problem(const at::Tensor& boxes1, const at::Tensor& boxes2, const char* op) {
  const auto batch = broadcast_batch(boxes1, boxes2, /*set_dims=*/1, op);
  const int64_t pairs = c10::multiply_integers(batch);
  std::vector<int64_t> shape(batch);
  shape.push_back(4);
  const auto opmath = opmath_dtype(boxes1.scalar_type());
  auto flat = [&](const at::Tensor& t) {
    return t.to(opmath).expand(shape).reshape({pairs, 4}).contiguous();
  };
  return {flat(boxes1), flat(boxes2), batch};
}

// The backward's incoming gradient, checked against the output shape, as [pairs] opmath.
at::Tensor aligned_grad_input(const at::Tensor& grad, const AlignedProblem& problem,
                              const char* op) {
  CVOPS_CHECK(grad.sizes() == at::IntArrayRef(problem.batch), op,
              "grad must have the output's shape ", at::IntArrayRef(problem.batch), ", got ",
              grad.sizes());
  return grad.to(problem.boxes1.scalar_type()).reshape({-1}).contiguous();
}

// Per-pair gradients [pairs, 4] summed back over broadcast dims to each input's shape and dtype.
std::tuple<at::Tensor, at::Tensor> aligned_grads_to_inputs(const at::Tensor& grad1,
                                                           const at::Tensor& grad2,
                                                           const at::Tensor& boxes1,
                                                           const at::Tensor& boxes2,
                                                           const AlignedProblem& problem) {
  std::vector<int64_t> shape(problem.batch);
  shape.push_back(4);
  return {at::sum_to(grad1.view(shape), boxes1.sizes()).to(boxes1.scalar_type()),
          at::sum_to(grad2.view(shape), boxes2.sizes()).to(boxes2.scalar_type())};
}

}  // namespace

at::Tensor box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2, std::string_view kind_name,
                   std::string_view fmt_name) {
  constexpr const char* op = "box_iou";
  const IouKind kind = parse_kind(op, kind_name);
  const auto problem = pairwise_problem(boxes1, boxes2, parse_format(op, fmt_name), op);
  const int64_t sets = problem.fields1.size(0), N = problem.fields1.size(1);
  const int64_t M = problem.fields2.size(1);
  auto out = empty_streaming_output({sets, N, M}, problem.fields1.options());
  if (out.numel() > 0) {
    // Set 2 field by field ([sets, 8, M]) so each field is one contiguous run.
    boxes_loops()(op, boxes1)
        .pairwise(problem.fields1, problem.fields2.transpose(1, 2).contiguous(), kind, out);
  }
  return out.view(problem.out_shape).to(boxes1.scalar_type());
}

at::Tensor box_iou_aligned(const at::Tensor& boxes1, const at::Tensor& boxes2,
                           std::string_view kind_name, std::string_view fmt_name) {
  constexpr const char* op = "box_iou_aligned";
  const IouKind kind = parse_kind(op, kind_name);
  const BoxFormat fmt = parse_format(op, fmt_name);
  const auto problem = aligned_problem(boxes1, boxes2, op);
  auto out = at::empty({problem.boxes1.size(0)}, problem.boxes1.options());
  if (out.numel() > 0)
    boxes_loops()(op, boxes1).aligned(problem.boxes1, problem.boxes2, kind, fmt, out);
  return out.view(problem.batch).to(boxes1.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> box_iou_aligned_backward(const at::Tensor& grad,
                                                            const at::Tensor& boxes1,
                                                            const at::Tensor& boxes2,
                                                            std::string_view kind_name,
                                                            std::string_view fmt_name) {
  constexpr const char* op = "box_iou_aligned_backward";
  const IouKind kind = parse_kind(op, kind_name);
  const BoxFormat fmt = parse_format(op, fmt_name);
  const auto problem = aligned_problem(boxes1, boxes2, op);
  const auto g = aligned_grad_input(grad, problem, op);
  auto grad1 = at::empty_like(problem.boxes1), grad2 = at::empty_like(problem.boxes1);
  if (g.numel() > 0)
    boxes_loops()(op, boxes1)
        .aligned_backward(g, problem.boxes1, problem.boxes2, kind, fmt, grad1, grad2);
  return aligned_grads_to_inputs(grad1, grad2, boxes1, boxes2, problem);
}

CVOPS_LOOP_TABLE(boxes_loops, "boxes")

CVOPS_FAMILY_OPS(boxes_loops, ops) {
  ops.impl("box_iou", &box_iou)
      .impl("box_iou_aligned", &box_iou_aligned)
      .impl("_box_iou_aligned_backward", &box_iou_aligned_backward);
}

}  // namespace cvops::boxes
