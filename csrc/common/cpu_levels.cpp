#include "common/cpu_levels.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string_view>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace cvops {

namespace {

#if defined(__x86_64__)
// AMX-TILE and AMX-INT8 (CPUID.7.0:EDX bits 24, 25), and an OS that saves the tile state
// (XCR0 bits 17, 18: XTILECFG, XTILEDATA).
bool amx_supported() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1) || !((d >> 25) & 1))
    return false;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;  // OSXSAVE
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((lo >> 17) & 3) == 3;
}

// Linux hands the tile data state to a process only on request (ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA, kernel 5.16+); without it the first tile instruction faults.
bool amx_permitted() {
#if defined(__linux__)
  constexpr int kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

CpuLevel detect() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd") &&
                      __builtin_cpu_supports("avx512vpopcntdq");
  if (avx512 && amx_supported()) return CpuLevel::kAmx;
  return avx512 ? CpuLevel::kAvx512 : avx2 ? CpuLevel::kAvx2 : CpuLevel::kBaseline;
#else
  return CpuLevel::kBaseline;
#endif
}

// CVOPS_CPU_LEVEL's level, never past the CPU's. Unset, the best vector level: amx only on request
// (cpu_levels.h).
CpuLevel from_environment(CpuLevel supported) {
  const char* value = std::getenv("CVOPS_CPU_LEVEL");
  if (value == nullptr || *value == '\0') {
    return supported == CpuLevel::kAmx ? CpuLevel::kAvx512 : supported;
  }
  const std::string_view v(value);
  CpuLevel wanted;
  if (v == "baseline") {
    wanted = CpuLevel::kBaseline;
  } else if (v == "avx2") {
    wanted = CpuLevel::kAvx2;
  } else if (v == "avx512") {
    wanted = CpuLevel::kAvx512;
  } else if (v == "amx") {
    wanted = CpuLevel::kAmx;
  } else {
    TORCH_CHECK(false,
                "cvops: CVOPS_CPU_LEVEL must be 'baseline', 'avx2', 'avx512' or 'amx', got '", v,
                "'");
  }
  return static_cast<int>(wanted) < static_cast<int>(supported) ? wanted : supported;
}

}  // namespace

CpuLevel cpu_supported_level() {
  static const CpuLevel level = detect();
  return level;
}

CpuLevel cpu_level() {
  static const CpuLevel level = [] {
    const CpuLevel wanted = from_environment(cpu_supported_level());
#if defined(__x86_64__)
    if (wanted == CpuLevel::kAmx && !amx_permitted()) return CpuLevel::kAvx512;
#endif
    return wanted;
  }();
  return level;
}

const char* cpu_level_name(CpuLevel level) {
  switch (level) {
    case CpuLevel::kAmx: return "amx";
    case CpuLevel::kAvx512: return "avx512";
    case CpuLevel::kAvx2: return "avx2";
    case CpuLevel::kBaseline: break;
  }
  return "baseline";
}

}  // namespace cvops
