// Schemas of the boxes family and its op bodies: validation, broadcasting, the per-box fields and
// the outputs, for every device; the devices supply the loops over pairs (boxes.h).
#include "boxes/boxes.h"

#include <ATen/ExpandUtils.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/atan.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/checks.h"
#include "common/choice.h"
#include "common/cpu_memory.h"
#include "common/loop_table.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  m.def("box_iou(Tensor boxes1, Tensor boxes2, str kind, str fmt, float eps=1e-07) -> Tensor");
  m.def(
      "_box_iou_backward(Tensor grad, Tensor boxes1, Tensor boxes2, str kind, str fmt, "
      "float eps=1e-07) -> (Tensor, Tensor)");
  m.def(
      "box_iou_aligned(Tensor boxes1, Tensor boxes2, str kind, str fmt, float eps=1e-07, "
      "bool loss_form=False) -> Tensor");
  m.def(
      "_box_iou_aligned_backward(Tensor grad, Tensor boxes1, Tensor boxes2, str kind, str fmt, "
      "float eps=1e-07, bool loss_form=False) -> (Tensor, Tensor)");
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

BoxFormat parse_format(const char* op, std::string_view fmt) {
  return parse_choice<BoxFormat>(
      op, "fmt", fmt,
      {{"xyxy", BoxFormat::kXyxy}, {"xywh", BoxFormat::kXywh}, {"cxcywh", BoxFormat::kCxcywh}});
}

// torchvision's eps placements (boxes.h). Its complete_box_iou_loss passes eps to α only: the IoU
// and distance terms keep their default 1e-7.
IouEps iou_eps(IouKind kind, double eps, bool loss_form) {
  IouEps e;
  e.diagonal = e.alpha = eps;
  if (!loss_form) return e;
  e.clamp_enclosure = false;
  e.uni = e.enclosure = eps;
  if (kind == IouKind::kCiou) e.uni = e.diagonal = 1e-7;
  return e;
}

// The dtype IoUs are computed and returned in, as torchvision's: the two sets' dtypes promote,
// and integer and float16/bfloat16 boxes give float32.
at::ScalarType iou_dtype(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return at::promote_types(boxes1.scalar_type(), boxes2.scalar_type()) == at::kDouble ? at::kDouble
                                                                                      : at::kFloat;
}

// The options of the op's values; eps is checked in their dtype.
at::TensorOptions iou_options(const char* op, const at::Tensor& boxes1, const at::Tensor& boxes2,
                              double eps) {
  const auto dtype = iou_dtype(boxes1, boxes2);
  check_eps(op, eps, dtype);
  return boxes1.options().dtype(dtype);
}

// [..., n, kBoxFields] in `dtype`, corners and areas formed as torchvision forms them, so the
// values match it to the last bit.
at::Tensor box_fields(const at::Tensor& boxes, BoxFormat fmt, at::ScalarType dtype) {
  const auto b = boxes.to(dtype);
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
  const char* layout = set_dims == 2 ? " must have shape [..., n, 4] (one box is [1, 4]), got "
                                     : " must have shape [..., 4], got ";
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"boxes1", boxes1},
                                std::pair<const char*, const at::Tensor&>{"boxes2", boxes2}}) {
    check_defined(op, name, t);
    const auto dtype = t.scalar_type();
    CVOPS_CHECK(at::isFloatingType(dtype) || at::isIntegralType(dtype, /*includeBool=*/false), op,
                name, " must hold box coordinates as a floating-point or integer tensor, got ",
                dtype);
    CVOPS_CHECK(t.dim() >= set_dims && t.size(-1) == 4, op, name, layout, t.sizes());
  }
  check_same_device(op, "boxes2", boxes2, "boxes1", boxes1);
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

std::vector<int64_t> appended(std::vector<int64_t> shape, std::initializer_list<int64_t> tail) {
  shape.insert(shape.end(), tail);
  return shape;
}

// One set of boxes broadcast to the batch and flattened, in `dtype`: [sets, n, 4] (set_dims = 2)
// or [pairs, 4] (set_dims = 1, contiguous for the element-wise loops).
at::Tensor flat_boxes(const at::Tensor& boxes, const std::vector<int64_t>& batch, int64_t set_dims,
                      at::ScalarType dtype) {
  const int64_t rows = c10::multiply_integers(batch);
  if (set_dims == 2) {
    const int64_t n = boxes.size(-2);
    // A view where the broadcast allows one: box_fields and the backward's blocks copy anyway.
    return boxes.to(dtype).expand(appended(batch, {n, 4})).reshape({rows, n, 4});
  }
  return boxes.to(dtype).expand(appended(batch, {4})).reshape({rows, 4}).contiguous();
}

void check_grad(const char* op, const at::Tensor& grad, at::IntArrayRef shape,
                at::ScalarType dtype) {
  check_dtype(op, "grad", grad, dtype);
  CVOPS_CHECK(grad.sizes() == shape, op, "grad must have the output's shape ", shape, ", got ",
              grad.sizes());
}

// Gradients [rows..., 4] of the flattened sets summed back over broadcast dims to each input's
// shape and dtype.
at::Tensor grad_to_input(const at::Tensor& grad, const std::vector<int64_t>& shape,
                         const at::Tensor& boxes) {
  return at::sum_to(grad.view(shape), boxes.sizes()).to(boxes.scalar_type());
}

// Pairs per block of the pairwise backward: each block runs the element-wise reverse pass on its
// pairs, [pairs, 4] per operand, and sums them into the two sets' gradients in a fixed order.
constexpr int64_t kBackwardPairsPerBlock = 1 << 19;

}  // namespace

at::Tensor box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2, std::string_view kind_name,
                   std::string_view fmt_name, double eps) {
  constexpr const char* op = "box_iou";
  const IouKind kind = parse_kind(op, kind_name);
  const BoxFormat fmt = parse_format(op, fmt_name);
  const auto batch = broadcast_batch(boxes1, boxes2, /*set_dims=*/2, op);
  const auto options = iou_options(op, boxes1, boxes2, eps);
  const int64_t N = boxes1.size(-2), M = boxes2.size(-2);
  const auto out_shape = appended(batch, {N, M});
  if (c10::multiply_integers(out_shape) == 0) return at::empty(out_shape, options);
  check_output_fits(op, "boxes1 (" + std::to_string(N) + ") by boxes2 (" + std::to_string(M) + ")",
                    out_shape, options);
  const auto dtype = options.dtype().toScalarType();
  const auto fields1 = box_fields(flat_boxes(boxes1, batch, 2, dtype), fmt, dtype);
  // Set 2 field by field ([sets, 8, M]) so each field is one contiguous run.
  const auto fields2 = box_fields(flat_boxes(boxes2, batch, 2, dtype), fmt, dtype);
  auto out = empty_streaming_output({fields1.size(0), N, M}, options);
  boxes_loops()(op, boxes1)
      .pairwise(fields1, fields2.transpose(1, 2).contiguous(), kind, iou_eps(kind, eps, false),
                out);
  return out.view(out_shape);
}

std::tuple<at::Tensor, at::Tensor> box_iou_backward(const at::Tensor& grad,
                                                    const at::Tensor& boxes1,
                                                    const at::Tensor& boxes2,
                                                    std::string_view kind_name,
                                                    std::string_view fmt_name, double eps) {
  constexpr const char* op = "box_iou_backward";
  const IouKind kind = parse_kind(op, kind_name);
  const BoxFormat fmt = parse_format(op, fmt_name);
  const auto batch = broadcast_batch(boxes1, boxes2, /*set_dims=*/2, op);
  const auto options = iou_options(op, boxes1, boxes2, eps);
  const auto dtype = options.dtype().toScalarType();
  const int64_t N = boxes1.size(-2), M = boxes2.size(-2);
  check_grad(op, grad, appended(batch, {N, M}), dtype);
  check_same_device(op, "grad", grad, "boxes1", boxes1);
  const auto a = flat_boxes(boxes1, batch, 2, dtype), b = flat_boxes(boxes2, batch, 2, dtype);
  const int64_t sets = a.size(0);
  const auto g = grad.reshape({sets, N, M});
  auto grad_a = at::zeros(a.sizes(), options), grad_b = at::zeros(b.sizes(), options);
  const IouEps e = iou_eps(kind, eps, false);
  // Sets s0..s1, rows r0..r1 of set 1 against all of set 2.
  auto block = [&](int64_t s0, int64_t s1, int64_t r0, int64_t r1) {
    const std::vector<int64_t> pairs{s1 - s0, r1 - r0, M, 4};
    const auto pa = a.slice(0, s0, s1)
                        .slice(1, r0, r1)
                        .unsqueeze(2)
                        .expand(pairs)
                        .reshape({-1, 4})
                        .contiguous();
    const auto pb = b.slice(0, s0, s1).unsqueeze(1).expand(pairs).reshape({-1, 4}).contiguous();
    const auto pg = g.slice(0, s0, s1).slice(1, r0, r1).reshape({-1}).contiguous();
    auto ga = at::empty_like(pa), gb = at::empty_like(pb);
    boxes_loops()(op, boxes1).aligned_backward(pg, pa, pb, kind, fmt, e, ga, gb);
    grad_a.slice(0, s0, s1).slice(1, r0, r1).copy_(ga.view(pairs).sum(2));
    grad_b.slice(0, s0, s1).add_(gb.view(pairs).sum(1));
  };
  if (sets * N * M > 0) {
    const int64_t rows_per_block = std::max<int64_t>(1, kBackwardPairsPerBlock / M);
    if (rows_per_block >= N) {
      const int64_t sets_per_block = std::max<int64_t>(1, kBackwardPairsPerBlock / (N * M));
      for (int64_t s0 = 0; s0 < sets; s0 += sets_per_block)
        block(s0, std::min(sets, s0 + sets_per_block), 0, N);
    } else {
      for (int64_t s = 0; s < sets; ++s)
        for (int64_t r0 = 0; r0 < N; r0 += rows_per_block)
          block(s, s + 1, r0, std::min(N, r0 + rows_per_block));
    }
  }
  return {grad_to_input(grad_a, appended(batch, {N, 4}), boxes1),
          grad_to_input(grad_b, appended(batch, {M, 4}), boxes2)};
}

at::Tensor box_iou_aligned(const at::Tensor& boxes1, const at::Tensor& boxes2,
                           std::string_view kind_name, std::string_view fmt_name, double eps,
                           bool loss_form) {
  constexpr const char* op = "box_iou_aligned";
  const IouKind kind = parse_kind(op, kind_name);
  const BoxFormat fmt = parse_format(op, fmt_name);
  const auto batch = broadcast_batch(boxes1, boxes2, /*set_dims=*/1, op);
  const auto options = iou_options(op, boxes1, boxes2, eps);
  auto out = at::empty(batch, options);
  if (out.numel() == 0) return out;
  const auto dtype = options.dtype().toScalarType();
  boxes_loops()(op, boxes1)
      .aligned(flat_boxes(boxes1, batch, 1, dtype), flat_boxes(boxes2, batch, 1, dtype), kind, fmt,
               iou_eps(kind, eps, loss_form), out);
  return out;
}

std::tuple<at::Tensor, at::Tensor> box_iou_aligned_backward(
    const at::Tensor& grad, const at::Tensor& boxes1, const at::Tensor& boxes2,
    std::string_view kind_name, std::string_view fmt_name, double eps, bool loss_form) {
  constexpr const char* op = "box_iou_aligned_backward";
  const IouKind kind = parse_kind(op, kind_name);
  const BoxFormat fmt = parse_format(op, fmt_name);
  const auto batch = broadcast_batch(boxes1, boxes2, /*set_dims=*/1, op);
  const auto options = iou_options(op, boxes1, boxes2, eps);
  const auto dtype = options.dtype().toScalarType();
  check_grad(op, grad, batch, dtype);
  check_same_device(op, "grad", grad, "boxes1", boxes1);
  const auto a = flat_boxes(boxes1, batch, 1, dtype), b = flat_boxes(boxes2, batch, 1, dtype);
  auto grad_a = at::empty_like(a), grad_b = at::empty_like(b);
  if (a.size(0) > 0)
    boxes_loops()(op, boxes1)
        .aligned_backward(grad.reshape({-1}).contiguous(), a, b, kind, fmt,
                          iou_eps(kind, eps, loss_form), grad_a, grad_b);
  const auto shape = appended(batch, {4});
  return {grad_to_input(grad_a, shape, boxes1), grad_to_input(grad_b, shape, boxes2)};
}

CVOPS_LOOP_TABLE(boxes_loops, "boxes")

CVOPS_FAMILY_OPS(boxes_loops, ops) {
  ops.impl("box_iou", &box_iou)
      .impl("_box_iou_backward", &box_iou_backward)
      .impl("box_iou_aligned", &box_iou_aligned)
      .impl("_box_iou_aligned_backward", &box_iou_aligned_backward);
}

}  // namespace cvops::boxes
