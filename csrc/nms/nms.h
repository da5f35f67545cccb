#pragma once
// The nms family: nms, batched_nms (segmented by category), multiclass_nms (a batch of images,
// padded static outputs) and soft_nms. The op bodies in nms.cpp validate, handle dtypes and
// replace non-finite boxes by a box that overlaps nothing (the policy is stated once, in the
// docstring of cvops/ops/nms.py), then run the device's loops (Loops). The IoU below is shared by
// the CPU and CUDA loops, so they decide every suppression alike, bit for bit.
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "common/loop_table.h"
#include "common/rounding.h"

namespace cvops::nms {

struct MulticlassOptions {
  double iou_threshold;
  double score_threshold;  // candidates need score > score_threshold
  int64_t max_per_class;   // survivors kept per (image, class)
  int64_t max_total;       // K: detections per image
  bool class_agnostic;     // one NMS per image over all (box, class) candidates
};

enum class SoftNmsMethod { kLinear, kGaussian };

struct SoftNmsOptions {
  double sigma;
  double iou_threshold;
  double score_threshold;
  SoftNmsMethod method;
};

// The device loops, called with validated, non-empty, contiguous opmath tensors whose
// non-finite boxes are already replaced.
struct Loops {
  // Kept indices (int64) of boxes [n, 4] with scores [n], by decreasing score (ties: lower index
  // first). categories: int64 [n] (a box only suppresses boxes of its own category), or an
  // undefined tensor for one category.
  at::Tensor (*nms)(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& categories,
                    double iou_threshold);
  // boxes [B, N, G, 4] (G = 1: shared by the classes, G = C: per class), scores [B, N, C] →
  // the preallocated scores_out [B, K] (opmath), classes, indices [B, K] and num_valid [B] (int64).
  // Padding: score 0, class −1, index −1.
  void (*multiclass)(const at::Tensor& boxes, const at::Tensor& scores,
                     const MulticlassOptions& options, at::Tensor& scores_out, at::Tensor& classes,
                     at::Tensor& indices, at::Tensor& num_valid);
  // (picked indices int64, their scores at the time they were picked), in pick order.
  std::tuple<at::Tensor, at::Tensor> (*soft)(const at::Tensor& boxes, const at::Tensor& scores,
                                             const SoftNmsOptions& options);
};

// The largest T not above `threshold`: for every T value v, v > result ⇔ double(v) > threshold,
// so kernels compare in T and still decide as the double comparison does.
template <typename T>
T threshold_in(double threshold) {
  T t = static_cast<T>(threshold);
  if (static_cast<double>(t) > threshold)
    t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  return t;
}

LoopTable<Loops>& nms_loops();

// torchvision's NMS IoU of two xyxy boxes given with their areas (x2 − x1)·(y2 − y1), in its
// operation order. Inputs are finite or the no-overlap box of nms.cpp (no NaN), so min/max never see a NaN.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T nms_iou(T ax1, T ay1, T ax2, T ay2, T a_area, T bx1, T by1,
                                            T bx2, T by2, T b_area) {
  const T w = std::max(T(0), std::min(ax2, bx2) - std::max(ax1, bx1));
  const T h = std::max(T(0), std::min(ay2, by2) - std::max(ay1, by1));
  const T inter = mul_rn(w, h);
  return inter / (a_area + b_area - inter);
}

}  // namespace cvops::nms
