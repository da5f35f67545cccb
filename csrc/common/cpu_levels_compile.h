// Compiles the kernel bodies named by CVOPS_CPU_BODIES once per CPU level, in the namespaces
// cpu_baseline, cpu_avx2 and cpu_avx512 of the including namespace (see cpu_levels.h). No include
// guard: each <family>_cpu.cpp includes it once, after its own #includes.
#ifndef CVOPS_CPU_BODIES
#error "define CVOPS_CPU_BODIES (the bodies' header) before including common/cpu_levels_compile.h"
#endif

// The level being compiled, for the bodies' #if: g++ lexes a whole C++ file before it applies any
// `#pragma GCC target`, so __AVX2__ and the like keep the command line's value (baseline) there.
#define CVOPS_CPU_NS cpu_baseline
#define CVOPS_CPU_AVX2 0
#define CVOPS_CPU_AVX512 0
#include CVOPS_CPU_BODIES
#undef CVOPS_CPU_NS
#undef CVOPS_CPU_AVX2
#undef CVOPS_CPU_AVX512

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c")
#define CVOPS_CPU_NS cpu_avx2
#define CVOPS_CPU_AVX2 1
#define CVOPS_CPU_AVX512 0
#include CVOPS_CPU_BODIES
#undef CVOPS_CPU_NS
#undef CVOPS_CPU_AVX2
#undef CVOPS_CPU_AVX512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target( \
    "avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx512vpopcntdq,prefer-vector-width=256")
#define CVOPS_CPU_NS cpu_avx512
#define CVOPS_CPU_AVX2 1
#define CVOPS_CPU_AVX512 1
#include CVOPS_CPU_BODIES
#undef CVOPS_CPU_NS
#undef CVOPS_CPU_AVX2
#undef CVOPS_CPU_AVX512
#pragma GCC pop_options
#endif

#undef CVOPS_CPU_BODIES
