// Compiles the kernel bodies named by CVOPS_CPU_BODIES once per CPU level, in the namespaces
// cpu_baseline, cpu_avx2 and cpu_avx512 of the including namespace (see cpu_levels.h). No include
// guard: each <family>_cpu.cpp includes it once, after its own #includes.
#ifndef CVOPS_CPU_BODIES
#error "define CVOPS_CPU_BODIES (the bodies' header) before including common/cpu_levels_compile.h"
#endif

#define CVOPS_CPU_NS cpu_baseline
#include CVOPS_CPU_BODIES
#undef CVOPS_CPU_NS

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c")
#define CVOPS_CPU_NS cpu_avx2
#include CVOPS_CPU_BODIES
#undef CVOPS_CPU_NS
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target( \
    "avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx512vpopcntdq,prefer-vector-width=256")
#define CVOPS_CPU_NS cpu_avx512
#include CVOPS_CPU_BODIES
#undef CVOPS_CPU_NS
#pragma GCC pop_options
#endif

#undef CVOPS_CPU_BODIES
