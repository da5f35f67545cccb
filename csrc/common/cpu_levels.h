#pragma once
// CPU multiversioning: a kernel body is written once and compiled for three instruction-set
// levels in one file, and the best level the CPU has is chosen once at load. setuptools gives one
// set of flags for all sources (never -march=native: the wheel must run on any x86-64), so the
// levels come from `#pragma GCC target` regions:
//
//   // <family>_cpu.cpp
//   #define CVOPS_CPU_BODIES "gram/gram_cpu_bodies.h"  // no include guard; no #include inside;
//   #include "common/cpu_levels_compile.h"             // wraps itself in namespace CVOPS_CPU_NS
//   ...
//   CVOPS_CPU_SELECT(mirror_plane<float>)(g, C);        // the chosen level's instantiation
//
// A helper defined outside the bodies that takes a body's lambda must be C10_ALWAYS_INLINE: a
// default-target function cannot inline code compiled for a higher level (common/cpu_reduce.h).
// Inside a body `#if CVOPS_CPU_AVX2` / `#if CVOPS_CPU_AVX512` (AVX-512 F/BW/VL/DQ/VPOPCNTDQ) say
// which level is being compiled, for intrinsics (never __AVX2__: g++ fixes the predefined macros
// before it reads the target pragmas). The build turns floating-point contraction off (-ffp-contract=off), so
// every level computes the same bits; tests force each level in a subprocess with
// CVOPS_CPU_LEVEL=baseline|avx2|avx512 (it can only lower the level, never raise it past the CPU).
#include <cstdint>

namespace cvops {

enum class CpuLevel : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The level the kernels run at: the best the CPU supports, capped by CVOPS_CPU_LEVEL. Fixed at load.
CpuLevel cpu_level();
// The best level this CPU supports, whatever CVOPS_CPU_LEVEL says.
CpuLevel cpu_supported_level();
const char* cpu_level_name(CpuLevel level);

template <typename Fn>
Fn cpu_select(Fn baseline, Fn avx2, Fn avx512) {
  switch (cpu_level()) {
    case CpuLevel::kAvx512: return avx512;
    case CpuLevel::kAvx2: return avx2;
    case CpuLevel::kBaseline: break;
  }
  return baseline;
}

}  // namespace cvops

#if defined(__x86_64__)
#define CVOPS_CPU_SELECT(fn) ::cvops::cpu_select(&cpu_baseline::fn, &cpu_avx2::fn, &cpu_avx512::fn)
#else
#define CVOPS_CPU_SELECT(fn) (&cpu_baseline::fn)
#endif
