#pragma once
// One pair's IoU / GIoU / DIoU / CIoU from the per-box fields (boxes.h), shared by the CPU and CUDA
// kernels, with torchvision's formulas and operation order so the values match it.
#include <c10/macros/Macros.h>

#include <algorithm>

#include "boxes/boxes.h"

namespace cvops::boxes {

constexpr double kEps = 1e-7;                                  // torchvision's DIoU/CIoU eps
constexpr double kFourOverPiSquared = 0.40528473456935108578;  // 4/π², CIoU's aspect term

// The per-box fields (the columns of box_fields) of one box.
template <typename T>
struct Box {
  T x1, y1, x2, y2, area, cx, cy, aspect;
};

template <IouKind kind, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T pair_value(const Box<T>& a, const Box<T>& b) {
  const T iw = std::max(std::min(a.x2, b.x2) - std::max(a.x1, b.x1), T(0));
  const T ih = std::max(std::min(a.y2, b.y2) - std::max(a.y1, b.y1), T(0));
  const T inter = iw * ih;
  const T uni = a.area + b.area - inter;
  const T iou = inter / uni;
  if constexpr (kind == IouKind::kIou) return iou;
  const T cw = std::max(std::max(a.x2, b.x2) - std::min(a.x1, b.x1), T(0));
  const T ch = std::max(std::max(a.y2, b.y2) - std::min(a.y1, b.y1), T(0));
  if constexpr (kind == IouKind::kGiou) {
    const T enclosing = cw * ch;
    return iou - (enclosing - uni) / enclosing;
  }
  const T dx = a.cx - b.cx, dy = a.cy - b.cy;
  const T diou = iou - (dx * dx + dy * dy) / (cw * cw + ch * ch + T(kEps));
  if constexpr (kind == IouKind::kDiou) return diou;
  const T d = a.aspect - b.aspect;
  const T v = T(kFourOverPiSquared) * (d * d);
  return diou - v / (T(1) - iou + v + T(kEps)) * v;
}

// Box i of an array of per-box field rows [n, kBoxFields].
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Box<T> box_at(const T* rows, int64_t i) {
  const T* f = rows + i * kBoxFields;
  return {f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]};
}

// Box j of field-major fields [kBoxFields, n].
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Box<T> box_at_column(const T* fields, int64_t n, int64_t j) {
  return {fields[j],         fields[n + j],     fields[2 * n + j], fields[3 * n + j],
          fields[4 * n + j], fields[5 * n + j], fields[6 * n + j], fields[7 * n + j]};
}

}  // namespace cvops::boxes
