#include "common/loop_table.h"

#include <algorithm>

namespace cvops {

namespace {

std::vector<const LoopTableBase*>& registry() {
  static std::vector<const LoopTableBase*> tables;
  return tables;
}

}  // namespace

const char* loop_device_name(LoopDevice device) {
  return device == LoopDevice::kCpu ? "CPU" : "CUDA";
}

LoopTableBase::LoopTableBase(const char* family) : family_(family) { registry().push_back(this); }

void LoopTableBase::add_op(const char* op) {
  if (std::find(ops_.begin(), ops_.end(), op) == ops_.end()) ops_.emplace_back(op);
}

const std::vector<const LoopTableBase*>& LoopTableBase::all() { return registry(); }

const void* LoopTableBase::slot(const char* op, const at::Tensor& t) const {
  const auto type = t.device().type();
  const void* loops = type == c10::DeviceType::CPU    ? slots_[static_cast<int>(LoopDevice::kCpu)]
                      : type == c10::DeviceType::CUDA ? slots_[static_cast<int>(LoopDevice::kCuda)]
                                                      : nullptr;
  CVOPS_CHECK(loops != nullptr, op, "no ", t.device().type(), " kernels for this op in this build",
              type == c10::DeviceType::CUDA ? " (cvops was built without CUDA)" : "",
              ": inputs must be CPU", type == c10::DeviceType::CUDA ? "" : " or CUDA",
              " tensors, got a tensor on ", t.device());
  return loops;
}

}  // namespace cvops
