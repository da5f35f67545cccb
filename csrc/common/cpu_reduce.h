#pragma once
// CPU reductions shared by the kernels.
#include <c10/macros/Macros.h>

#include <cstdint>

namespace cvops {

// Σ_{i<n} term(i) in `kLanes` interleaved partial sums: the compiler vectorises the lanes, and the
// order of the additions depends on n alone, so results are deterministic (unlike a parallel
// reduction whose split follows the thread count).
// Not for bodies compiled inside a CPU level region (cpu_levels.h): a default-target lane_sum
// cannot inline a level's `term` and would call it once per element; such bodies keep their sums
// in default-target functions inlined into the level's entry points (instance_norm_cpu.cpp).
template <int kLanes, typename acc_t, typename Term>
inline acc_t lane_sum(int64_t n, const Term& term) {
  acc_t lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += term(i + l);
  }
  acc_t total = 0;
  for (; i < n; ++i) total += term(i);
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

}  // namespace cvops
