// The pairwise IoU rows, compiled once per CPU level (common/cpu_levels.h): included by
// boxes_cpu.cpp only, inside its namespace.
namespace CVOPS_CPU_NS {

// Rows of set 1 against every box of set 2 (field-major, so each field is one contiguous run).
template <IouKind kind, typename T>
C10_ALWAYS_INLINE void rows_of(const T* a_rows, int64_t rows, const T* b_fields, int64_t M,
                               const Eps<T> e, T* out) {
  // Restrict-qualified runs: without them the vectoriser gives up on the alias checks of nine
  // streams (DIoU/CIoU read all eight fields).
  const T* __restrict x1 = b_fields;
  const T* __restrict y1 = b_fields + M;
  const T* __restrict x2 = b_fields + 2 * M;
  const T* __restrict y2 = b_fields + 3 * M;
  const T* __restrict area = b_fields + 4 * M;
  const T* __restrict cx = b_fields + 5 * M;
  const T* __restrict cy = b_fields + 6 * M;
  const T* __restrict aspect = b_fields + 7 * M;
  for (int64_t r = 0; r < rows; ++r) {
    const Box<T> a = box_at(a_rows, r);
    T* __restrict o = out + r * M;
    for (int64_t j = 0; j < M; ++j) {
      o[j] = pair_value<kind>(
          a, Box<T>{x1[j], y1[j], x2[j], y2[j], area[j], cx[j], cy[j], aspect[j]}, e);
    }
  }
}

template <typename T>
void iou_rows(const T* a_rows, int64_t rows, const T* b_fields, int64_t M, IouKind kind,
              const Eps<T> e, T* out) {
  switch (kind) {
    case IouKind::kIou: return rows_of<IouKind::kIou>(a_rows, rows, b_fields, M, e, out);
    case IouKind::kGiou: return rows_of<IouKind::kGiou>(a_rows, rows, b_fields, M, e, out);
    case IouKind::kDiou: return rows_of<IouKind::kDiou>(a_rows, rows, b_fields, M, e, out);
    case IouKind::kCiou: return rows_of<IouKind::kCiou>(a_rows, rows, b_fields, M, e, out);
  }
}

}  // namespace CVOPS_CPU_NS
