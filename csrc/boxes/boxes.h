#pragma once
// The boxes family: pairwise IoU / GIoU / DIoU / CIoU between two sets of boxes in xyxy, xywh or
// cxcywh form, with the same values as torchvision.ops (box_iou, generalized_box_iou,
// distance_box_iou, complete_box_iou; eps = 1e-7 for DIoU/CIoU).
#include <ATen/core/Tensor.h>

#include <string_view>
#include <vector>

namespace cvops::boxes {

enum class IouKind { kIou, kGiou, kDiou, kCiou };

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

}  // namespace cvops::boxes
