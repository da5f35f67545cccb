#pragma once
// The boxes family: IoU / GIoU / DIoU / CIoU between boxes in xyxy, xywh or cxcywh form, pairwise
// (box_iou) or element-wise with gradients (box_iou_aligned), with the same values as torchvision.ops
// (box_iou, generalized_box_iou, distance_box_iou, complete_box_iou and the *_box_iou_loss forms).
// The op bodies in boxes.cpp (validation, broadcasting, per-box fields, outputs) serve every
// device; each device supplies only the loops over pairs (Loops).
#include <ATen/core/Tensor.h>

#include "common/loop_table.h"

namespace cvops::boxes {

enum class IouKind { kIou, kGiou, kDiou, kCiou };
enum class BoxFormat { kXyxy, kXywh, kCxcywh };

// Per-box quantities every pair needs, computed once per box. Columns: x1, y1, x2, y2, area, cx,
// cy, atan(w/h).
constexpr int64_t kBoxFields = 8;

// Where the formulas add eps, as torchvision places it. The pairwise and element-wise values
// (box_iou, generalized/distance/complete_box_iou): eps in the DIoU/CIoU diagonal and in CIoU's α.
// The loss forms (*_box_iou_loss) also add it to the union (and GIoU to the enclosing area, whose
// sides they do not clamp at 0), so two zero-area boxes give IoU 0, not 0/0.
struct IouEps {
  double uni = 0, enclosure = 0, diagonal = 1e-7, alpha = 1e-7;
  bool clamp_enclosure = true;
};

// The device loops, called only with non-empty, contiguous opmath tensors.
struct Loops {
  // out [sets, N, M]: fields1 [sets, N, kBoxFields] against fields2 laid out field by field
  // [sets, kBoxFields, M].
  void (*pairwise)(const at::Tensor& fields1, const at::Tensor& fields2, IouKind kind,
                   const IouEps& eps, at::Tensor& out);
  // out [pairs] for boxes1, boxes2 [pairs, 4] in `fmt`.
  void (*aligned)(const at::Tensor& boxes1, const at::Tensor& boxes2, IouKind kind, BoxFormat fmt,
                  const IouEps& eps, at::Tensor& out);
  // grad1, grad2 [pairs, 4] = grad [pairs] · d out / d boxes.
  void (*aligned_backward)(const at::Tensor& grad, const at::Tensor& boxes1,
                           const at::Tensor& boxes2, IouKind kind, BoxFormat fmt, const IouEps& eps,
                           at::Tensor& grad1, at::Tensor& grad2);
};

LoopTable<Loops>& boxes_loops();

}  // namespace cvops::boxes
