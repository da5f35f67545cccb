// CPU kernels of the NMS ops. One greedy core for every op: boxes of one segment (a category, an
// (image, class) pair, or an image) in processing order, laid out field by field. Small segments
// test each kept box against every later box in one branch-free loop; large ones first sort the
// boxes by x1 and test a kept box only against the window of boxes whose x-extent can meet it
// (x1 < its x2, and past the prefix whose running max of x2 stays at or below its x1), so scenes
// of many separate boxes do not cost n². Suppression is a flag per box (no bitset: a 32-bit flag
// keeps the window loop in one lane width, which is what lets it vectorise). Segments run in
// parallel.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "common/cpu_levels.h"
#include "common/dispatch.h"
#include "common/loop_table.h"
#include "nms/nms.h"

namespace cvops::nms {
namespace {

// Segments at least this long sweep by x1; shorter ones test all later boxes (the sort would cost
// more than it saves).
constexpr int64_t kSweepMinBoxes = 256;

// One segment's boxes in processing order, field by field.
template <typename T>
struct SegmentBoxes {
  std::vector<T> x1, y1, x2, y2, area;

  // Appends box `i` of a row-major [*, 4] array.
  void push(const T* boxes, int64_t i) {
    const T* b = boxes + 4 * i;
    x1.push_back(b[0]), y1.push_back(b[1]), x2.push_back(b[2]), y2.push_back(b[3]);
    area.push_back((b[2] - b[0]) * (b[3] - b[1]));
  }
  int64_t size() const { return static_cast<int64_t>(x1.size()); }
  void clear() { x1.clear(), y1.clear(), x2.clear(), y2.clear(), area.clear(); }
};

#define CVOPS_CPU_BODIES "nms/nms_cpu_bodies.h"
#include "common/cpu_levels_compile.h"

// The suppression loop of the CPU level chosen at load.
template <typename T>
void suppress(T ax1, T ay1, T ax2, T ay2, T a_area, const T* x1, const T* y1, const T* x2,
              const T* y2, const T* area, const int32_t* rank, int32_t r, int64_t n, T threshold,
              int32_t* flag) {
  static const auto body = CVOPS_CPU_SELECT(suppress<T>);
  body(ax1, ay1, ax2, ay2, a_area, x1, y1, x2, y2, area, rank, r, n, threshold, flag);
}

// Greedy NMS over one segment: appends to `kept` the positions (ascending) of the boxes no earlier
// kept box suppresses, stopping after `cap` of them.
template <typename T>
void greedy_all_pairs(const SegmentBoxes<T>& s, T threshold, int64_t cap,
                      std::vector<int64_t>& kept) {
  const int64_t n = s.size();
  std::vector<int32_t> suppressed(n, 0);
  for (int64_t i = 0; i < n && static_cast<int64_t>(kept.size()) < cap; ++i) {
    if (suppressed[i]) continue;
    kept.push_back(i);
    const int64_t j = i + 1;
    suppress(s.x1[i], s.y1[i], s.x2[i], s.y2[i], s.area[i], &s.x1[j], &s.y1[j], &s.x2[j], &s.y2[j],
             &s.area[j], static_cast<const int32_t*>(nullptr), 0, n - j, threshold, &suppressed[j]);
  }
}

template <typename T>
void greedy_sweep(const SegmentBoxes<T>& s, T threshold, int64_t cap, std::vector<int64_t>& kept) {
  const int64_t n = s.size();
  // Positions by x1 (the no-overlap boxes, x1 = +inf, go last); ties keep processing order.
  std::vector<int32_t> by_x(n);
  std::iota(by_x.begin(), by_x.end(), 0);
  std::sort(by_x.begin(), by_x.end(), [&](int32_t a, int32_t b) {
    return s.x1[a] < s.x1[b] || (s.x1[a] == s.x1[b] && a < b);
  });
  SegmentBoxes<T> x;  // the boxes in x1 order
  std::vector<int32_t> rank(n), slot(n);
  std::vector<T> max_x2(n);  // running max of x2 along the x1 order
  x.x1.resize(n), x.y1.resize(n), x.x2.resize(n), x.y2.resize(n), x.area.resize(n);
  T running = -std::numeric_limits<T>::infinity();
  for (int64_t q = 0; q < n; ++q) {
    const int32_t p = by_x[q];
    x.x1[q] = s.x1[p], x.y1[q] = s.y1[p], x.x2[q] = s.x2[p], x.y2[q] = s.y2[p];
    x.area[q] = s.area[p];
    rank[q] = p, slot[p] = static_cast<int32_t>(q);
    running = std::max(running, s.x2[p]);
    max_x2[q] = running;
  }
  std::vector<int32_t> suppressed(n, 0);  // in x1 order
  for (int64_t r = 0; r < n && static_cast<int64_t>(kept.size()) < cap; ++r) {
    if (suppressed[slot[r]]) continue;
    kept.push_back(r);
    // Boxes before `lo` end at or left of x1_r; boxes from `hi` start at or right of x2_r.
    const int64_t lo = std::upper_bound(max_x2.begin(), max_x2.end(), s.x1[r]) - max_x2.begin();
    const int64_t hi = std::lower_bound(x.x1.begin(), x.x1.end(), s.x2[r]) - x.x1.begin();
    if (lo >= hi) continue;
    suppress(s.x1[r], s.y1[r], s.x2[r], s.y2[r], s.area[r], &x.x1[lo], &x.y1[lo], &x.x2[lo],
             &x.y2[lo], &x.area[lo], &rank[lo], static_cast<int32_t>(r), hi - lo, threshold,
             &suppressed[lo]);
  }
}

template <typename T>
void greedy(const SegmentBoxes<T>& s, T threshold, int64_t cap, std::vector<int64_t>& kept) {
  kept.clear();
  if (s.size() >= kSweepMinBoxes) {
    greedy_sweep(s, threshold, cap, kept);
  } else {
    greedy_all_pairs(s, threshold, cap, kept);
  }
}

// A candidate: its score and an integer key (box index, or class·N + box index) that breaks ties,
// lower first.
template <typename T>
struct Candidate {
  T score;
  int64_t key;
};

template <typename T>
bool before(const Candidate<T>& a, const Candidate<T>& b) {
  return a.score > b.score || (a.score == b.score && a.key < b.key);
}

template <typename T>
void sort_candidates(std::vector<Candidate<T>>& c) {
  std::sort(c.begin(), c.end(), before<T>);
}

// ---- nms / batched_nms ----------------------------------------------------------------------

// Positions of `order` grouped by category, each group keeping the order (a counting sort when
// the ids span a small range), as `offsets` into the returned array.
std::vector<int64_t> group_by_category(const std::vector<int64_t>& order, const int64_t* category,
                                       std::vector<int64_t>& offsets) {
  const int64_t n = static_cast<int64_t>(order.size());
  std::vector<int64_t> grouped(order);
  if (n == 0) {
    offsets = {0};
    return grouped;
  }
  int64_t lo = category[order[0]], hi = lo;
  for (int64_t i : order) lo = std::min(lo, category[i]), hi = std::max(hi, category[i]);
  offsets.clear();
  if (static_cast<uint64_t>(hi - lo) <= static_cast<uint64_t>(2 * n + 1024)) {
    std::vector<int64_t> count(hi - lo + 2, 0);
    for (int64_t i : order) ++count[category[i] - lo + 1];
    for (size_t k = 1; k < count.size(); ++k) count[k] += count[k - 1];
    for (size_t k = 0; k + 1 < count.size(); ++k) {
      if (count[k + 1] > count[k]) offsets.push_back(count[k]);
    }
    for (int64_t i : order) grouped[count[category[i] - lo]++] = i;
  } else {
    std::stable_sort(grouped.begin(), grouped.end(),
                     [&](int64_t a, int64_t b) { return category[a] < category[b]; });
    for (int64_t k = 0; k < n; ++k) {
      if (k == 0 || category[grouped[k]] != category[grouped[k - 1]]) offsets.push_back(k);
    }
  }
  offsets.push_back(n);
  return grouped;
}

template <typename T>
at::Tensor nms_typed(const at::Tensor& boxes_t, const at::Tensor& scores_t,
                     const at::Tensor& categories, double iou_threshold) {
  const int64_t n = boxes_t.size(0);
  const T* boxes = boxes_t.const_data_ptr<T>();
  const T* scores = scores_t.const_data_ptr<T>();
  const T threshold = threshold_in<T>(iou_threshold);

  // Processing order over every box with a score (NaN scores are dropped).
  std::vector<Candidate<T>> candidates;
  candidates.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(scores[i])) candidates.push_back({scores[i], i});
  }
  sort_candidates(candidates);
  std::vector<int64_t> order(candidates.size());
  for (size_t k = 0; k < candidates.size(); ++k) order[k] = candidates[k].key;

  std::vector<int64_t> offsets = {0, static_cast<int64_t>(order.size())};
  const std::vector<int64_t> grouped =
      categories.defined() ? group_by_category(order, categories.const_data_ptr<int64_t>(), offsets)
                           : order;
  std::vector<uint8_t> keep(n, 0);
  const int64_t segments = static_cast<int64_t>(offsets.size()) - 1;
  at::parallel_for(0, segments, 1, [&](int64_t begin, int64_t end) {
    SegmentBoxes<T> s;
    std::vector<int64_t> kept;
    for (int64_t seg = begin; seg < end; ++seg) {
      s.clear();
      for (int64_t k = offsets[seg]; k < offsets[seg + 1]; ++k) s.push(boxes, grouped[k]);
      greedy(s, threshold, std::numeric_limits<int64_t>::max(), kept);
      for (int64_t p : kept) keep[grouped[offsets[seg] + p]] = 1;
    }
  });
  // Kept boxes in the global processing order: by decreasing score, ties lower index first.
  int64_t count = 0;
  for (int64_t i : order) count += keep[i];
  auto out = at::empty({count}, boxes_t.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t i : order) {
    if (keep[i]) *o++ = i;
  }
  return out;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& categories,
                   double iou_threshold) {
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_nms_cpu", [&] {
    out = nms_typed<scalar_t>(boxes, scores, categories, iou_threshold);
  });
  return out;
}

// ---- multiclass_nms ---------------------------------------------------------------------------

template <typename T>
void multiclass_typed(const at::Tensor& boxes_t, const at::Tensor& scores_t,
                      const MulticlassOptions& options, at::Tensor& scores_out,
                      at::Tensor& classes_out, at::Tensor& indices_out, at::Tensor& num_valid) {
  const int64_t B = scores_t.size(0), N = scores_t.size(1), C = scores_t.size(2);
  const int64_t G = boxes_t.size(2), K = options.max_total;
  const T* boxes = boxes_t.const_data_ptr<T>();
  const T* scores = scores_t.const_data_ptr<T>();
  const T iou_threshold = threshold_in<T>(options.iou_threshold);
  const T score_threshold = threshold_in<T>(options.score_threshold);
  T* out_scores = scores_out.data_ptr<T>();
  int64_t* out_classes = classes_out.data_ptr<int64_t>();
  int64_t* out_indices = indices_out.data_ptr<int64_t>();
  int64_t* out_count = num_valid.data_ptr<int64_t>();

  // Candidates of one segment in processing order. key = c·N + n (ties: class, then box).
  auto box_of = [&](int64_t b, int64_t key) {
    const int64_t c = key / N, n = key % N;
    return ((b * N + n) * G + (G == 1 ? 0 : c));
  };
  // Survivors of segment (b, c) (or of image b when class-agnostic), as candidates.
  const int64_t segments_per_image = options.class_agnostic ? 1 : C;
  const int64_t cap = options.class_agnostic ? K : options.max_per_class;
  std::vector<std::vector<Candidate<T>>> survivors(B * segments_per_image);
  at::parallel_for(0, B * segments_per_image, 1, [&](int64_t begin, int64_t end) {
    std::vector<Candidate<T>> candidates;
    SegmentBoxes<T> s;
    std::vector<int64_t> kept;
    for (int64_t seg = begin; seg < end; ++seg) {
      const int64_t b = seg / segments_per_image;
      const int64_t c_first = options.class_agnostic ? 0 : seg % segments_per_image;
      const int64_t c_last = options.class_agnostic ? C : c_first + 1;
      candidates.clear();
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t c = c_first; c < c_last; ++c) {
          const T score = scores[(b * N + n) * C + c];
          if (score > score_threshold) candidates.push_back({score, c * N + n});
        }
      }
      sort_candidates(candidates);
      s.clear();
      for (const auto& cand : candidates) s.push(boxes, box_of(b, cand.key));
      greedy(s, iou_threshold, cap, kept);
      auto& out = survivors[seg];
      for (int64_t p : kept) out.push_back(candidates[p]);
    }
  });
  // Per image: the best K survivors over its classes (class-agnostic ones are already in order).
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<Candidate<T>> all;
    for (int64_t b = begin; b < end; ++b) {
      all.clear();
      for (int64_t k = 0; k < segments_per_image; ++k) {
        const auto& seg = survivors[b * segments_per_image + k];
        all.insert(all.end(), seg.begin(), seg.end());
      }
      const int64_t count = std::min<int64_t>(K, static_cast<int64_t>(all.size()));
      std::partial_sort(all.begin(), all.begin() + count, all.end(), before<T>);
      for (int64_t k = 0; k < count; ++k) {
        out_scores[b * K + k] = all[k].score;
        out_classes[b * K + k] = all[k].key / N;
        out_indices[b * K + k] = all[k].key % N;
      }
      out_count[b] = count;
    }
  });
}

void multiclass_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                    const MulticlassOptions& options, at::Tensor& scores_out, at::Tensor& classes,
                    at::Tensor& indices, at::Tensor& num_valid) {
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_multiclass_nms_cpu", [&] {
    multiclass_typed<scalar_t>(boxes, scores, options, scores_out, classes, indices, num_valid);
  });
}

// ---- soft_nms --------------------------------------------------------------------------------

// The live boxes, in index order, field by field; each step picks the best, decays the others
// and drops the dead, so a step costs the number of boxes still alive.
template <typename T>
std::tuple<at::Tensor, at::Tensor> soft_typed(const at::Tensor& boxes_t, const at::Tensor& scores_t,
                                              const SoftNmsOptions& options) {
  const int64_t n = boxes_t.size(0);
  const T* boxes = boxes_t.const_data_ptr<T>();
  const T* scores = scores_t.const_data_ptr<T>();
  const T sigma = static_cast<T>(options.sigma);
  const T iou_threshold = threshold_in<T>(options.iou_threshold);
  const bool gaussian = options.method == SoftNmsMethod::kGaussian;
  // Compared in double, as the threshold was given; false for NaN.
  auto alive = [&](T s) { return static_cast<double>(s) >= options.score_threshold; };

  SegmentBoxes<T> live;
  std::vector<T> score;
  std::vector<int64_t> index;
  for (int64_t i = 0; i < n; ++i) {
    if (!alive(scores[i])) continue;
    live.push(boxes, i);
    score.push_back(scores[i]);
    index.push_back(i);
  }
  std::vector<int64_t> picked;
  std::vector<T> picked_scores;
  while (!score.empty()) {
    const int64_t best = std::max_element(score.begin(), score.end()) - score.begin();  // first max
    picked.push_back(index[best]);
    picked_scores.push_back(score[best]);
    const T ax1 = live.x1[best], ay1 = live.y1[best], ax2 = live.x2[best], ay2 = live.y2[best];
    const T a_area = live.area[best];
    int64_t m = 0;  // compacts the survivors in place, keeping index order
    for (int64_t j = 0; j < static_cast<int64_t>(score.size()); ++j) {
      if (j == best) continue;
      const T iou = nms_iou(ax1, ay1, ax2, ay2, a_area, live.x1[j], live.y1[j], live.x2[j],
                            live.y2[j], live.area[j]);
      T s = score[j];
      if (gaussian) {
        if (iou > T(0)) s *= std::exp(-(iou * iou) / sigma);  // exp(−0) = 1: skipping is exact
      } else if (iou > iou_threshold) {
        s *= T(1) - iou;
      }
      if (!alive(s)) continue;
      live.x1[m] = live.x1[j], live.y1[m] = live.y1[j], live.x2[m] = live.x2[j];
      live.y2[m] = live.y2[j], live.area[m] = live.area[j];
      score[m] = s, index[m] = index[j];
      ++m;
    }
    for (auto* v : {&live.x1, &live.y1, &live.x2, &live.y2, &live.area, &score}) v->resize(m);
    index.resize(m);
  }
  const int64_t k = static_cast<int64_t>(picked.size());
  auto out_index = at::empty({k}, boxes_t.options().dtype(at::kLong));
  auto out_scores = at::empty({k}, scores_t.options());
  std::copy(picked.begin(), picked.end(), out_index.data_ptr<int64_t>());
  std::copy(picked_scores.begin(), picked_scores.end(), out_scores.data_ptr<T>());
  return {out_index, out_scores};
}

std::tuple<at::Tensor, at::Tensor> soft_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                                            const SoftNmsOptions& options) {
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "cvops_soft_nms_cpu",
                             [&] { out = soft_typed<scalar_t>(boxes, scores, options); });
  return out;
}

constexpr Loops kCpuLoops{&nms_cpu, &multiclass_cpu, &soft_cpu};

}  // namespace

CVOPS_REGISTER_LOOPS(nms_loops, kCpu, kCpuLoops);

}  // namespace cvops::nms
