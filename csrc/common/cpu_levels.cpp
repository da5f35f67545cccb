#include "common/cpu_levels.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string_view>

namespace cvops {

namespace {

CpuLevel detect() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd") &&
                      __builtin_cpu_supports("avx512vpopcntdq");
  return avx512 ? CpuLevel::kAvx512 : avx2 ? CpuLevel::kAvx2 : CpuLevel::kBaseline;
#else
  return CpuLevel::kBaseline;
#endif
}

CpuLevel from_environment(CpuLevel supported) {
  const char* value = std::getenv("CVOPS_CPU_LEVEL");
  if (value == nullptr || *value == '\0') return supported;
  const std::string_view v(value);
  CpuLevel wanted;
  if (v == "baseline") {
    wanted = CpuLevel::kBaseline;
  } else if (v == "avx2") {
    wanted = CpuLevel::kAvx2;
  } else if (v == "avx512") {
    wanted = CpuLevel::kAvx512;
  } else {
    TORCH_CHECK(false, "cvops: CVOPS_CPU_LEVEL must be 'baseline', 'avx2' or 'avx512', got '", v,
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
  static const CpuLevel level = from_environment(cpu_supported_level());
  return level;
}

const char* cpu_level_name(CpuLevel level) {
  switch (level) {
    case CpuLevel::kAvx512: return "avx512";
    case CpuLevel::kAvx2: return "avx2";
    case CpuLevel::kBaseline: break;
  }
  return "baseline";
}

}  // namespace cvops
