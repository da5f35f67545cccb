// Schemas of the nms family and its op bodies: validation, dtypes, the non-finite box policy and
// the padded outputs of multiclass_nms; the devices supply the loops (nms.h).
#include "nms/nms.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/_unique2.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "common/checks.h"
#include "common/dispatch.h"
#include "common/loop_table.h"

TORCH_LIBRARY_FRAGMENT(cvops, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def(
      "multiclass_nms(Tensor boxes, Tensor scores, float iou_threshold, float score_threshold, "
      "int max_per_class, int max_total, bool class_agnostic) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "soft_nms(Tensor boxes, Tensor scores, float sigma, float iou_threshold, "
      "float score_threshold, str method) -> (Tensor, Tensor)");
}

namespace cvops::nms {
namespace {

// The ops with torchvision's names take any threshold, as torchvision does; a negative one
// suppresses every pair (see best_per_category).
void check_iou_threshold(const char* op, double threshold, bool negative_allowed) {
  CVOPS_CHECK(!std::isnan(threshold), op, "iou_threshold must be a number, got nan");
  CVOPS_CHECK(negative_allowed || threshold >= 0, op, "iou_threshold must be a number >= 0, got ",
              threshold);
}

void check_not_nan(const char* op, const char* name, double value) {
  CVOPS_CHECK(!std::isnan(value), op, name, " must be a number, got nan");
}

// boxes [n, 4] and scores [n], floating, same dtype and device. Returns the boxes, with an
// empty [0] (torchvision's empty boxes) as [0, 4].
at::Tensor check_boxes_and_scores(const char* op, const at::Tensor& boxes,
                                  const at::Tensor& scores) {
  check_floating(op, "boxes", boxes);
  check_floating(op, "scores", scores);
  const auto b = boxes.dim() == 1 && boxes.size(0) == 0 ? boxes.view({0, 4}) : boxes;
  CVOPS_CHECK(b.dim() == 2 && b.size(1) == 4, op, "boxes must have shape [n, 4], got ",
              boxes.sizes());
  CVOPS_CHECK(scores.dim() == 1, op, "scores must have shape [n], got ", scores.sizes());
  CVOPS_CHECK(scores.size(0) == b.size(0), op, "scores must have one value per box (", b.size(0),
              "), got ", scores.size(0));
  check_same_dtype(op, "scores", scores, "boxes", boxes);
  check_same_device(op, "scores", scores, "boxes", boxes);
  return b;
}

// idxs [n] as int64 category ids. Integer (and bool) ids are used as given; floating ids are
// categories by value (each distinct value is one category, as torchvision's per-class path
// treats them), so whole numbers stored as floats give the integer result.
at::Tensor category_ids(const char* op, const at::Tensor& idxs, const at::Tensor& boxes) {
  check_defined(op, "idxs", idxs);
  const auto dtype = idxs.scalar_type();
  CVOPS_CHECK(at::isIntegralType(dtype, /*includeBool=*/true) || at::isFloatingType(dtype), op,
              "idxs must be a tensor of category ids (integer or floating), got ", dtype);
  CVOPS_CHECK(idxs.dim() == 1 && idxs.size(0) == boxes.size(0), op,
              "idxs must have shape [n] with one category per box (n = ", boxes.size(0), "), got ",
              idxs.sizes());
  check_same_device(op, "idxs", idxs, "boxes", boxes);
  if (!at::isFloatingType(dtype)) return idxs.to(at::kLong).contiguous();
  CVOPS_CHECK(idxs.numel() == 0 || !at::isnan(idxs).any().item<bool>(), op,
              "idxs must not hold NaN (a category id), got NaN");
  return std::get<1>(at::_unique2(idxs, /*sorted=*/true, /*return_inverse=*/true)).contiguous();
}

// Boxes [..., 4] in opmath, contiguous, with every box that has a non-finite coordinate replaced
// by one that overlaps nothing: x1 = y1 = +inf, x2 = y2 = −inf (its intersection with any box is
// 0 and its area +inf, so its IoU is 0 — never above a threshold >= 0).
at::Tensor finite_boxes(const at::Tensor& boxes) {
  const auto b = boxes.to(opmath_dtype(boxes.scalar_type()));
  constexpr double inf = std::numeric_limits<double>::infinity();
  const auto no_overlap = at::tensor({inf, inf, -inf, -inf}, b.options());
  return at::where(at::isfinite(b).all(-1, /*keepdim=*/true), b, no_overlap).contiguous();
}

at::Tensor opmath_scores(const at::Tensor& scores) {
  return scores.to(opmath_dtype(scores.scalar_type())).contiguous();
}

at::Tensor empty_indices(const at::Tensor& like) {
  return at::empty({0}, like.options().dtype(at::kLong));
}

SoftNmsMethod parse_method(const char* op, std::string_view method) {
  if (method == "linear") return SoftNmsMethod::kLinear;
  if (method == "gaussian") return SoftNmsMethod::kGaussian;
  CVOPS_CHECK(false, op, "method must be 'linear' or 'gaussian', got '", std::string(method), "'");
  return SoftNmsMethod::kGaussian;
}


// iou_threshold < 0: every pair with an IoU (>= 0 > threshold) suppresses, so each category keeps
// only its best box (NaN scores are never kept). categories: int64 [n], or undefined for one.
at::Tensor best_per_category(const at::Tensor& scores, const at::Tensor& categories) {
  const auto s = opmath_scores(scores);
  // By decreasing score, ties lower index first; NaN scores dropped.
  auto order = std::get<1>(at::sort(s, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  order = order.masked_select(at::isnan(s.index_select(0, order)).logical_not());
  if (!categories.defined()) return order.slice(0, 0, std::min<int64_t>(1, order.numel()));
  // A stable sort by category keeps that order within each category: the first of each run wins.
  const auto by_category = std::get<1>(at::sort(categories.index_select(0, order), /*stable=*/true,
                                                /*dim=*/0, /*descending=*/false));
  const auto sorted = categories.index_select(0, order.index_select(0, by_category));
  auto first = at::ones_like(sorted, sorted.options().dtype(at::kBool));
  if (sorted.numel() > 1) first.slice(0, 1).copy_(sorted.slice(0, 1) != sorted.slice(0, 0, -1));
  const auto positions = std::get<0>(at::sort(by_category.masked_select(first)));
  return order.index_select(0, positions);
}

}  // namespace

at::Tensor nms(const at::Tensor& boxes_in, const at::Tensor& scores, double iou_threshold) {
  constexpr const char* op = "nms";
  const auto boxes = check_boxes_and_scores(op, boxes_in, scores);
  check_iou_threshold(op, iou_threshold, /*negative_allowed=*/true);
  if (boxes.size(0) == 0) return empty_indices(boxes);
  if (iou_threshold < 0) return best_per_category(scores, at::Tensor());
  return nms_loops()(op, boxes).nms(finite_boxes(boxes), opmath_scores(scores), at::Tensor(),
                                    iou_threshold);
}

at::Tensor batched_nms(const at::Tensor& boxes_in, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold) {
  constexpr const char* op = "batched_nms";
  const auto boxes = check_boxes_and_scores(op, boxes_in, scores);
  const auto categories = category_ids(op, idxs, boxes);
  check_iou_threshold(op, iou_threshold, /*negative_allowed=*/true);
  if (boxes.size(0) == 0) return empty_indices(boxes);
  if (iou_threshold < 0) return best_per_category(scores, categories);
  return nms_loops()(op, boxes).nms(finite_boxes(boxes), opmath_scores(scores), categories,
                                    iou_threshold);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiclass_nms(
    const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, double score_threshold,
    int64_t max_per_class, int64_t max_total, bool class_agnostic) {
  constexpr const char* op = "multiclass_nms";
  check_floating(op, "boxes", boxes);
  check_floating(op, "scores", scores);
  check_same_dtype(op, "scores", scores, "boxes", boxes);
  check_same_device(op, "scores", scores, "boxes", boxes);
  CVOPS_CHECK(scores.dim() == 3, op, "scores must have shape [B, N, C], got ", scores.sizes());
  const int64_t B = scores.size(0), N = scores.size(1), C = scores.size(2);
  CVOPS_CHECK((boxes.dim() == 3 || boxes.dim() == 4) && boxes.size(-1) == 4, op,
              "boxes must have shape [B, N, 4] (shared by the classes) or [B, N, C, 4] (per "
              "class), got ",
              boxes.sizes());
  CVOPS_CHECK(boxes.size(0) == B && boxes.size(1) == N && (boxes.dim() == 3 || boxes.size(2) == C),
              op, "boxes ", boxes.sizes(), " do not match scores [B, N, C] = ", scores.sizes());
  check_iou_threshold(op, iou_threshold, /*negative_allowed=*/false);
  check_not_nan(op, "score_threshold", score_threshold);
  CVOPS_CHECK(max_per_class >= 1, op, "max_per_class must be >= 1, got ", max_per_class);
  CVOPS_CHECK(max_total >= 1, op, "max_total must be >= 1, got ", max_total);
  // Per detection: a box, a score, a class and an index.
  const double detection_bytes = 4.0 * boxes.element_size() + scores.element_size() + 2.0 * 8;
  check_output_fits(op, "max_total = " + std::to_string(max_total),
                    std::to_string(B) + " x " + std::to_string(max_total) + " padded detections",
                    double(B) * double(max_total) * detection_bytes, boxes.device());

  const int64_t G = boxes.dim() == 4 ? C : 1;  // boxes per (image, box index)
  const auto boxes4 = boxes.reshape({B, N, G, 4});
  const auto long_options = scores.options().dtype(at::kLong);
  auto out_scores =
      at::zeros({B, max_total}, scores.options().dtype(opmath_dtype(scores.scalar_type())));
  auto classes = at::full({B, max_total}, -1, long_options);
  auto indices = at::full({B, max_total}, -1, long_options);
  auto num_valid = at::zeros({B}, long_options);
  if (B * N * C > 0) {
    const MulticlassOptions options{iou_threshold, score_threshold, max_per_class, max_total,
                                    class_agnostic};
    nms_loops()(op, boxes).multiclass(finite_boxes(boxes4), opmath_scores(scores), options,
                                      out_scores, classes, indices, num_valid);
  }
  // The kept boxes as the user gave them (not the replaced non-finite ones); padding is zeros.
  const auto padding = indices < 0;
  auto flat_index = indices.clamp_min(0) * G;
  if (G > 1) flat_index += classes.clamp_min(0);
  auto out_boxes = boxes4.reshape({B, N * G, 4});
  if (N * G > 0) {
    out_boxes = out_boxes.gather(1, flat_index.unsqueeze(-1).expand({B, max_total, 4}))
                    .masked_fill(padding.unsqueeze(-1), 0);
  } else {
    out_boxes = at::zeros({B, max_total, 4}, boxes.options());
  }
  return {out_boxes, out_scores.to(scores.scalar_type()), classes, indices, num_valid};
}

std::tuple<at::Tensor, at::Tensor> soft_nms(const at::Tensor& boxes_in, const at::Tensor& scores,
                                            double sigma, double iou_threshold,
                                            double score_threshold, std::string_view method) {
  constexpr const char* op = "soft_nms";
  const auto boxes = check_boxes_and_scores(op, boxes_in, scores);
  const SoftNmsMethod kind = parse_method(op, method);
  CVOPS_CHECK(sigma > 0, op, "sigma must be > 0, got ", sigma);
  check_iou_threshold(op, iou_threshold, /*negative_allowed=*/false);
  check_not_nan(op, "score_threshold", score_threshold);
  if (boxes.size(0) == 0) return {empty_indices(boxes), at::empty({0}, scores.options())};
  auto [kept, kept_scores] = nms_loops()(op, boxes).soft(
      finite_boxes(boxes), opmath_scores(scores), {sigma, iou_threshold, score_threshold, kind});
  return {kept, kept_scores.to(scores.scalar_type())};
}

CVOPS_LOOP_TABLE(nms_loops, "nms")

CVOPS_FAMILY_OPS(nms_loops, ops) {
  ops.impl("nms", &nms)
      .impl("batched_nms", &batched_nms)
      .impl("multiclass_nms", &multiclass_nms)
      .impl("soft_nms", &soft_nms);
}

}  // namespace cvops::nms
