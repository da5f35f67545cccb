#pragma once
// Precondition checks shared by every op. Each message starts with "cvops.<op>: " and names the
// argument, what was expected and what was given, so the user can fix the call without reading code.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#define CVOPS_CHECK(cond, op, ...) TORCH_CHECK((cond), "cvops.", op, ": ", __VA_ARGS__)

namespace cvops {

// Every other check starts here: a None passed for a Tensor argument arrives undefined.
inline void check_defined(const char* op, const char* name, const at::Tensor& t) {
  CVOPS_CHECK(t.defined(), op, name, " must be a tensor, got None");
}

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  check_defined(op, name, t);
  CVOPS_CHECK(at::isFloatingType(t.scalar_type()), op, name,
              " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
              t.scalar_type());
}

inline void check_dtype(const char* op, const char* name, const at::Tensor& t,
                        at::ScalarType want) {
  check_defined(op, name, t);
  CVOPS_CHECK(t.scalar_type() == want, op, name, " must be ", want, ", got ", t.scalar_type());
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t,
                              const char* ref_name, const at::Tensor& ref) {
  check_defined(op, name, t);
  CVOPS_CHECK(t.device() == ref.device(), op, name, " must be on the same device as ", ref_name,
              " (", ref.device(), "), got ", t.device());
}

inline void check_min_dim(const char* op, const char* name, const at::Tensor& t, int64_t min_dim,
                          const char* layout) {
  check_defined(op, name, t);
  CVOPS_CHECK(t.dim() >= min_dim, op, name, " must have at least ", min_dim, " dimensions ", layout,
              ", got shape ", t.sizes());
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                      const char* layout) {
  check_defined(op, name, t);
  CVOPS_CHECK(t.dim() == dim, op, name, " must have ", dim, " dimensions ", layout, ", got shape ",
              t.sizes());
}

// A secondary tensor (a gradient, a saved output) must have the dtype of the tensor it goes with.
inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t,
                             const char* ref_name, const at::Tensor& ref) {
  check_defined(op, name, t);
  CVOPS_CHECK(t.scalar_type() == ref.scalar_type(), op, name, " must have the dtype of ", ref_name,
              " (", ref.scalar_type(), "), got ", t.scalar_type());
}

// eps must be a finite number >= 0 in the dtype it is computed in (1e300 is inf in float32).
void check_eps(const char* op, double eps, at::ScalarType compute_dtype);

// at::empty(sizes, options) for an output whose size `asked_by` ("max_total = 4096") chose. It
// must fit in the device's memory: Linux over-commits, so a CPU allocation beyond it would succeed
// and the process be killed at first touch. CPU: the machine's physical memory is the limit; CUDA:
// the allocator's out-of-memory error, reworded to name the argument. `format` lays it out in memory.
at::Tensor empty_output(const char* op, const std::string& asked_by, at::IntArrayRef sizes,
                        const at::TensorOptions& options,
                        at::MemoryFormat format = at::MemoryFormat::Contiguous);

// The CPU memory check of empty_output alone, for outputs allocated elsewhere: `what` (an output
// of `bytes` bytes, or several) on `device`.
void check_output_fits(const char* op, const std::string& asked_by, const std::string& what,
                       double bytes, const at::Device& device);
void check_output_fits(const char* op, const std::string& asked_by, at::IntArrayRef sizes,
                       const at::TensorOptions& options);

// Index values must lie in [0, bound). Reads the tensor's extremes once (a host sync on CUDA):
// an out-of-range index would otherwise read out of bounds or abort the CUDA context.
void check_index_range(const char* op, const char* name, const at::Tensor& index, int64_t bound);

}  // namespace cvops
