#pragma once
// Non-maximum suppression in the boxes family: nms, batched_nms (segmented by category),
// multiclass_nms (a batch of images, padded static outputs) and soft_nms. The ops (validation,
// dtype handling, the NaN/inf policy below) are device-generic in nms.cpp; each device supplies
// the loops (NmsKernels).
//
// One policy on every device:
//  - IoU is torchvision's: inter / (area_a + area_b − inter) with area = (x2 − x1)·(y2 − y1),
//    computed in the boxes' opmath dtype and compared with `iou > iou_threshold` in double
//    (as torchvision's CPU kernel), with the product rounded on its own (no fused multiply-add).
//  - Processing order: decreasing score, ties by lower box index first.
//  - NaN scores: the box is dropped (never kept, never suppresses anything).
//  - Boxes with a non-finite coordinate (NaN or ±inf) overlap nothing: kept if their score keeps
//    them, never suppress and are never suppressed. nms.cpp replaces them by kNoOverlapBox before
//    any kernel runs, so kernels never see NaN coordinates.
//  - Degenerate boxes (x2 ≤ x1 or y2 ≤ y1) have no intersection with anything (as in torchvision).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <string_view>
#include <tuple>

namespace cvops::boxes {

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
// non-finite boxes are already replaced (see above).
struct NmsKernels {
  // Kept indices (int64) of boxes [n, 4] with scores [n], by decreasing score (ties: lower index
  // first). categories: int64 [n] (a box only suppresses boxes of its own category), or an
  // undefined tensor for one category.
  at::Tensor (*nms)(const at::Tensor& boxes, const at::Tensor& scores,
                    const at::Tensor& categories, double iou_threshold);
  // boxes [B, N, G, 4] (G = 1: shared by the classes, G = C: per class), scores [B, N, C] →
  // the preallocated scores_out [B, K] (opmath), classes, indices [B, K] and num_valid [B] (int64).
  // Padding: score 0, class −1, index −1.
  void (*multiclass)(const at::Tensor& boxes, const at::Tensor& scores,
                     const MulticlassOptions& options, at::Tensor& scores_out,
                     at::Tensor& classes, at::Tensor& indices, at::Tensor& num_valid);
  // (picked indices int64, their scores at the time they were picked), in pick order.
  std::tuple<at::Tensor, at::Tensor> (*soft)(const at::Tensor& boxes, const at::Tensor& scores,
                                             const SoftNmsOptions& options);
};

at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
               const NmsKernels& kernels);
at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold, const NmsKernels& kernels);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiclass_nms(
    const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
    double score_threshold, int64_t max_per_class, int64_t max_total, bool class_agnostic,
    const NmsKernels& kernels);
std::tuple<at::Tensor, at::Tensor> soft_nms(const at::Tensor& boxes, const at::Tensor& scores,
                                            double sigma, double iou_threshold,
                                            double score_threshold, std::string_view method,
                                            const NmsKernels& kernels);

// The largest T not above `threshold`: for every T value v, v > result ⇔ double(v) > threshold,
// so kernels compare in T and still decide as the double comparison does.
template <typename T>
T threshold_in(double threshold) {
  T t = static_cast<T>(threshold);
  if (static_cast<double>(t) > threshold) t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  return t;
}

// Registers the NMS ops for one dispatch key with that device's loops.
template <const NmsKernels& kernels>
void register_nms_ops(torch::Library& m) {
  m.impl("nms", [](const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
    return nms(boxes, scores, iou_threshold, kernels);
  });
  m.impl("batched_nms", [](const at::Tensor& boxes, const at::Tensor& scores,
                           const at::Tensor& idxs, double iou_threshold) {
    return batched_nms(boxes, scores, idxs, iou_threshold, kernels);
  });
  m.impl("multiclass_nms", [](const at::Tensor& boxes, const at::Tensor& scores,
                              double iou_threshold, double score_threshold, int64_t max_per_class,
                              int64_t max_total, bool class_agnostic) {
    return multiclass_nms(boxes, scores, iou_threshold, score_threshold, max_per_class, max_total,
                          class_agnostic, kernels);
  });
  m.impl("soft_nms", [](const at::Tensor& boxes, const at::Tensor& scores, double sigma,
                        double iou_threshold, double score_threshold, c10::string_view method) {
    return soft_nms(boxes, scores, sigma, iou_threshold, score_threshold, method, kernels);
  });
}

}  // namespace cvops::boxes
