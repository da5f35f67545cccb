// The NMS inner loop, compiled once per CPU level (common/cpu_levels.h): included by nms_cpu.cpp
// only, inside its namespace.
namespace CVOPS_CPU_NS {

// flag[q] |= (rank[q] > r && IoU(box r, box q) > threshold) for q in [0, n): one branch-free
// loop over field runs (restrict: nine streams would otherwise defeat the vectoriser's alias
// checks). rank == nullptr means rank[q] = q + rank_offset.
template <typename T>
void suppress(T ax1, T ay1, T ax2, T ay2, T a_area, const T* __restrict x1, const T* __restrict y1,
              const T* __restrict x2, const T* __restrict y2, const T* __restrict area,
              const int32_t* __restrict rank, int32_t r, int64_t n, T threshold,
              int32_t* __restrict flag) {
  if (rank == nullptr) {
    for (int64_t q = 0; q < n; ++q) {
      flag[q] |=
          nms_iou(ax1, ay1, ax2, ay2, a_area, x1[q], y1[q], x2[q], y2[q], area[q]) > threshold;
    }
  } else {
    for (int64_t q = 0; q < n; ++q) {
      const bool above =
          nms_iou(ax1, ay1, ax2, ay2, a_area, x1[q], y1[q], x2[q], y2[q], area[q]) > threshold;
      flag[q] |= static_cast<int32_t>(above & (rank[q] > r));
    }
  }
}

}  // namespace CVOPS_CPU_NS
