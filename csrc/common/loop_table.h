#pragma once
// The per-device loop tables of the op families (cvops's small DispatchStub, after ATen's
// native/DispatchStub.h). An op body in <family>.cpp validates, broadcasts and allocates once for
// every device, then runs the loops that the tensors' device registered from <family>_cpu.cpp or
// <family>_cuda.cu, each device file in one line:
//
//   // <family>.h                          LoopTable<Loops>& gram_loops();
//   // <family>.cpp                        CVOPS_LOOP_TABLE(gram_loops, "gram");
//   //                                     gram_loops()("gram_matrix", x).gram_matrix(...)
//   // <family>_cpu.cpp / <family>_cuda.cu CVOPS_REGISTER_LOOPS(gram_loops, kCpu, kCpuLoops);
//
// Each table records the ops that dispatch through it, so cvops._C.loop_tables() (read by
// `python -m cvops.info` and the tests) shows which devices really have loops for which ops.
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <string>
#include <utility>
#include <vector>

#include "common/checks.h"

namespace cvops {

enum class LoopDevice : int { kCpu = 0, kCuda = 1 };
constexpr int kLoopDevices = 2;
const char* loop_device_name(LoopDevice device);

class LoopTableBase {
 public:
  explicit LoopTableBase(const char* family);
  LoopTableBase(const LoopTableBase&) = delete;
  LoopTableBase& operator=(const LoopTableBase&) = delete;

  const std::string& family() const { return family_; }
  const std::vector<std::string>& ops() const { return ops_; }
  bool has(LoopDevice device) const { return slots_[static_cast<int>(device)] != nullptr; }
  void add_op(const char* op);

  // Every table of the build, in registration order.
  static const std::vector<const LoopTableBase*>& all();

 protected:
  // The slot of `t`'s device, or an error naming the op when this build has no loops there.
  const void* slot(const char* op, const at::Tensor& t) const;
  const void* slots_[kLoopDevices] = {};

 private:
  std::string family_;
  std::vector<std::string> ops_;
};

template <typename Loops>
class LoopTable : public LoopTableBase {
 public:
  using LoopTableBase::LoopTableBase;
  void set(LoopDevice device, const Loops& loops) { slots_[static_cast<int>(device)] = &loops; }
  const Loops& operator()(const char* op, const at::Tensor& t) const {
    return *static_cast<const Loops*>(slot(op, t));
  }
};

// What <family>.cpp registers its op bodies with: m.impl, and the op noted in the loop table.
struct FamilyOps {
  torch::Library& m;
  LoopTableBase& table;
  template <typename Fn>
  FamilyOps& impl(const char* op, Fn&& fn) {
    table.add_op(op);
    m.impl(op, std::forward<Fn>(fn));
    return *this;
  }
};

}  // namespace cvops

// Defines the family's table accessor (declared in <family>.h): constructed on first use, so the
// device files' registrations may run first in any order.
#define CVOPS_LOOP_TABLE(accessor, family_name)                              \
  decltype(accessor())& accessor() {                                         \
    static std::remove_reference_t<decltype(accessor())> table(family_name); \
    return table;                                                            \
  }

// One line in a device file: its loops go into the family's table at load time.
#define CVOPS_REGISTER_LOOPS(accessor, device, loops)      \
  static const bool C10_ANONYMOUS_VARIABLE(cvops_loops_) = \
      (accessor().set(::cvops::LoopDevice::device, loops), true)

#ifdef CVOPS_WITH_CUDA
#define CVOPS_IMPL_CUDA_(body)                 \
  TORCH_LIBRARY_IMPL(cvops, CUDA, m) {         \
    ::cvops::FamilyOps ops{m, body##_table()}; \
    body(ops);                                 \
  }
#else
#define CVOPS_IMPL_CUDA_(body)
#endif

// The op bodies of a family that fetch their loops from `accessor`'s table, registered for every
// device the build has (the table then picks the device's loops):
//   CVOPS_FAMILY_OPS(gram_loops, ops) { ops.impl("gram_matrix", &gram_matrix); }
#define CVOPS_FAMILY_OPS(accessor, ops)                                          \
  static void cvops_family_ops(::cvops::FamilyOps& ops);                         \
  static ::cvops::LoopTableBase& cvops_family_ops_table() { return accessor(); } \
  TORCH_LIBRARY_IMPL(cvops, CPU, m) {                                            \
    ::cvops::FamilyOps family{m, cvops_family_ops_table()};                      \
    cvops_family_ops(family);                                                    \
  }                                                                              \
  CVOPS_IMPL_CUDA_(cvops_family_ops)                                             \
  static void cvops_family_ops(::cvops::FamilyOps& ops)
