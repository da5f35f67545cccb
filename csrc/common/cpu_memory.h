#pragma once
// Large CPU outputs: a fresh buffer of tens of MB costs more in first-touch page faults (4 KiB at a
// time, zeroed by the kernel) than the kernel that fills it. Asking for transparent huge pages
// cuts the faults 512-fold where the OS allows it (THP "madvise" mode); elsewhere it is a no-op.
#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

namespace cvops {

at::Tensor empty_streaming_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                                  at::MemoryFormat format = at::MemoryFormat::Contiguous);

}  // namespace cvops
