#pragma once
// Precondition checks shared by every op. Each message starts with "cvops.<op>: " and names the
// argument, what was expected and what was given, so the user can fix the call without reading code.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#define CVOPS_CHECK(cond, op, ...) TORCH_CHECK((cond), "cvops.", op, ": ", __VA_ARGS__)

namespace cvops {

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  CVOPS_CHECK(at::isFloatingType(t.scalar_type()), op, name,
              " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
              t.scalar_type());
}

inline void check_dtype(const char* op, const char* name, const at::Tensor& t,
                        at::ScalarType want) {
  CVOPS_CHECK(t.scalar_type() == want, op, name, " must be ", want, ", got ", t.scalar_type());
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t,
                              const char* ref_name, const at::Tensor& ref) {
  CVOPS_CHECK(t.device() == ref.device(), op, name, " must be on the same device as ", ref_name,
              " (", ref.device(), "), got ", t.device());
}

inline void check_min_dim(const char* op, const char* name, const at::Tensor& t, int64_t min_dim,
                          const char* layout) {
  CVOPS_CHECK(t.dim() >= min_dim, op, name, " must have at least ", min_dim, " dimensions ", layout,
              ", got shape ", t.sizes());
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                      const char* layout) {
  CVOPS_CHECK(t.dim() == dim, op, name, " must have ", dim, " dimensions ", layout, ", got shape ",
              t.sizes());
}

// Index values must lie in [0, bound). Reads the tensor's extremes once (a host sync on CUDA):
// an out-of-range index would otherwise read out of bounds or abort the CUDA context.
void check_index_range(const char* op, const char* name, const at::Tensor& index, int64_t bound);

}  // namespace cvops
