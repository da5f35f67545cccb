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
// CVOPS_CPU_LEVEL=baseline|avx2|avx512|amx (never past what the CPU has).
//
// The amx level is avx512 plus the AMX int8 tile unit (TDPBSSD): the families run their avx512
// bodies, and one with tile loops (binary) takes them at kAmx. It runs only on request
// (CVOPS_CPU_LEVEL=amx), never by default, because the tile unit's rate is not the core's own: on
// a shared cloud host it varies from moment to moment (one TDPBSSD alone 7.4–18 ns, in the XNOR
// kernel with its tile loads 9–40 ns, measured on this project's 2-core host), and at its slow
// rate the tiles lose to the popcount loops (25 ns for the same 16·16·64 products), at its full
// rate they win almost three times.
#include <cstdint>

namespace cvops {

enum class CpuLevel : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2, kAmx = 3 };

// The level the kernels run at: CVOPS_CPU_LEVEL's, else the best the CPU supports short of amx,
// never past what it supports. Fixed at load.
CpuLevel cpu_level();
// The best level this CPU supports, whatever CVOPS_CPU_LEVEL says.
CpuLevel cpu_supported_level();
const char* cpu_level_name(CpuLevel level);

template <typename Fn>
Fn cpu_select(Fn baseline, Fn avx2, Fn avx512) {
  switch (cpu_level()) {
    case CpuLevel::kAmx:
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
