// Schemas of the boxes family and the parts shared by its CPU and CUDA kernels.
#include "boxes/boxes.h"

#include <ATen/ExpandUtils.h>
#include <ATen/TensorOperators.h>
#include <c10/util/accumulate.h>
#include <ATen/ops/atan.h>
#include <ATen/ops/stack.h>
#include <torch/library.h>

#include <string>

#include "common/checks.h"
#include "common/dispatch.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  m.def("box_iou(Tensor boxes1, Tensor boxes2, str kind, str fmt) -> Tensor");
  m.def("box_iou_aligned(Tensor boxes1, Tensor boxes2, str kind, str fmt) -> Tensor");
  m.def(
      "box_iou_aligned_backward(Tensor grad, Tensor boxes1, Tensor boxes2, str kind, str fmt) "
      "-> (Tensor, Tensor)");
}

namespace cvops::boxes {

IouKind parse_kind(const char* op, std::string_view kind) {
  if (kind == "iou") return IouKind::kIou;
  if (kind == "giou") return IouKind::kGiou;
  if (kind == "diou") return IouKind::kDiou;
  if (kind == "ciou") return IouKind::kCiou;
  CVOPS_CHECK(false, op, "kind must be 'iou', 'giou', 'diou' or 'ciou', got '", std::string(kind),
              "'");
  return IouKind::kIou;
}

at::Tensor box_fields(const at::Tensor& boxes, std::string_view fmt, const char* op) {
  const auto b = boxes.to(opmath_dtype(boxes.scalar_type()));
  const auto c0 = b.select(-1, 0), c1 = b.select(-1, 1), c2 = b.select(-1, 2), c3 = b.select(-1, 3);
  at::Tensor x1, y1, x2, y2, area;
  // Corners and areas as torchvision forms them, so the values match to the last bit.
  if (fmt == "xyxy") {
    x1 = c0, y1 = c1, x2 = c2, y2 = c3;
    area = (c2 - c0) * (c3 - c1);
  } else if (fmt == "xywh") {
    x1 = c0, y1 = c1, x2 = c0 + c2, y2 = c1 + c3;
    area = c2 * c3;
  } else if (fmt == "cxcywh") {
    x1 = c0 - c2 / 2, y1 = c1 - c3 / 2, x2 = c0 + c2 / 2, y2 = c1 + c3 / 2;
    area = c2 * c3;
  } else {
    CVOPS_CHECK(false, op, "fmt must be 'xyxy', 'xywh' or 'cxcywh', got '", std::string(fmt),
                "'");
  }
  const auto cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
  const auto aspect = at::atan((x2 - x1) / (y2 - y1));
  return at::stack({x1, y1, x2, y2, area, cx, cy, aspect}, -1).contiguous();
}

namespace {

// Checks two box tensors [..., n, 4] (set_dims = 2) or [..., 4] (set_dims = 1) and returns the
// broadcast shape of their leading dims.
std::vector<int64_t> broadcast_batch(const at::Tensor& boxes1, const at::Tensor& boxes2,
                                     int64_t set_dims, const char* op) {
  const char* layout = set_dims == 2 ? " must have shape [..., n, 4], got " : " must have shape [..., 4], got ";
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

}  // namespace

PairwiseProblem pairwise_problem(const at::Tensor& boxes1, const at::Tensor& boxes2,
                                 std::string_view fmt, const char* op) {
  const auto batch = broadcast_batch(boxes1, boxes2, /*set_dims=*/2, op);
  const int64_t N = boxes1.size(-2), M = boxes2.size(-2);
  const int64_t pairs_of_sets = c10::multiply_integers(batch);
  auto expand = [&](const at::Tensor& t, int64_t n) {
    std::vector<int64_t> shape(batch);
    shape.push_back(n);
    shape.push_back(4);
    return t.expand(shape).reshape({pairs_of_sets, n, 4});
  };
  PairwiseProblem problem{box_fields(expand(boxes1, N), fmt, op),
                          box_fields(expand(boxes2, M), fmt, op), batch};
  problem.out_shape.push_back(N);
  problem.out_shape.push_back(M);
  return problem;
}

BoxFormat parse_format(const char* op, std::string_view fmt) {
  if (fmt == "xyxy") return BoxFormat::kXyxy;
  if (fmt == "xywh") return BoxFormat::kXywh;
  if (fmt == "cxcywh") return BoxFormat::kCxcywh;
  CVOPS_CHECK(false, op, "fmt must be 'xyxy', 'xywh' or 'cxcywh', got '", std::string(fmt), "'");
  return BoxFormat::kXyxy;
}

AlignedProblem aligned_problem(const at::Tensor& boxes1, const at::Tensor& boxes2, const char* op) {
  const auto batch = broadcast_batch(boxes1, boxes2, /*set_dims=*/1, op);
  const int64_t pairs = c10::multiply_integers(batch);
  std::vector<int64_t> shape(batch);
  shape.push_back(4);
  const auto opmath = opmath_dtype(boxes1.scalar_type());
  auto flat = [&](const at::Tensor& t) { return t.to(opmath).expand(shape).reshape({pairs, 4}).contiguous(); };
  return {flat(boxes1), flat(boxes2), batch};
}

at::Tensor aligned_grad_input(const at::Tensor& grad, const AlignedProblem& problem, const char* op) {
  CVOPS_CHECK(grad.sizes() == at::IntArrayRef(problem.batch), op, "grad must have the output's shape ",
              at::IntArrayRef(problem.batch), ", got ", grad.sizes());
  return grad.to(problem.boxes1.scalar_type()).reshape({-1}).contiguous();
}

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

}  // namespace cvops::boxes
