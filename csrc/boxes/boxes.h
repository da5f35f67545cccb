#pragma once
// The boxes family: pairwise IoU / GIoU / DIoU / CIoU between two sets of boxes in xyxy, xywh or
// cxcywh form, with the same values as torchvision.ops (box_iou, generalized_box_iou,
// distance_box_iou, complete_box_iou; eps = 1e-7 for DIoU/CIoU).
#include <ATen/core/Tensor.h>

#include <string_view>
#include <tuple>
#include <vector>

namespace cvops::boxes {

enum class IouKind { kIou, kGiou, kDiou, kCiou };
enum class BoxFormat { kXyxy, kXywh, kCxcywh };

IouKind parse_kind(const char* op, std::string_view kind);

// Per-box quantities every pair needs, computed once: [..., n, kBoxFields] in opmath dtype.
// Columns: x1, y1, x2, y2, area, cx, cy, atan(w/h).
constexpr int64_t kBoxFields = 8;
at::Tensor box_fields(const at::Tensor& boxes, std::string_view fmt, const char* op);

// Validates the pair, broadcasts the leading dims and returns (fields1 [T, N, 8], fields2
// [T, M, 8], output shape [..., N, M]), both contiguous in opmath.
struct PairwiseProblem {
  at::Tensor fields1, fields2;
  std::vector<int64_t> out_shape;
};
PairwiseProblem pairwise_problem(const at::Tensor& boxes1, const at::Tensor& boxes2,
                                 std::string_view fmt, const char* op);

BoxFormat parse_format(const char* op, std::string_view fmt);

// box_iou_aligned: both sets broadcast to one batch shape and flattened to [pairs, 4] (opmath,
// contiguous); `batch` is the output shape.
struct AlignedProblem {
  at::Tensor boxes1, boxes2;
  std::vector<int64_t> batch;
};
AlignedProblem aligned_problem(const at::Tensor& boxes1, const at::Tensor& boxes2, const char* op);

// The backward's incoming gradient, checked against the output shape, as [pairs] opmath.
at::Tensor aligned_grad_input(const at::Tensor& grad, const AlignedProblem& problem, const char* op);

// Per-pair gradients [pairs, 4] summed back over broadcast dims to each input's shape and dtype.
std::tuple<at::Tensor, at::Tensor> aligned_grads_to_inputs(const at::Tensor& grad1,
                                                           const at::Tensor& grad2,
                                                           const at::Tensor& boxes1,
                                                           const at::Tensor& boxes2,
                                                           const AlignedProblem& problem);

}  // namespace cvops::boxes
