// The CPU kernels' instruction-set level: detection, the level in use, and the operators that
// read and set it (isa.h). Compiled for the baseline. supported() is the highest level both
// this CPU and the build have.
#include <torch/library.h>

#include <string>

#include "isa.h"

namespace mibcore {
namespace isa {

int supported() {
#if defined(MIBCORE_ISA_DISPATCH)
  // __builtin_cpu_supports also checks that the OS saves the AVX and AVX-512 registers (XCR0).
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                    __builtin_cpu_supports("f16c");
  if (!avx2) return MIBCORE_ISA_BASELINE;
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return avx512 ? MIBCORE_ISA_AVX512 : MIBCORE_ISA_AVX2;
#else
  return MIBCORE_ISA_BASELINE;
#endif
}

std::atomic<int> g_active{supported()};

namespace {

std::string compiled() {
  std::string out;
#if defined(MIBCORE_ISA_DISPATCH)
  for (const char* name : kNames) out += std::string(out.empty() ? "" : ",") + name;
#else
  out = kNames[MIBCORE_ISA_BASELINE];
#endif
  return out;
}

// "active=avx2;supported=avx2;compiled=baseline,avx2,avx512"
std::string describe() {
  return std::string("active=") + kNames[active()] + ";supported=" + kNames[supported()] + ";compiled=" + compiled();
}

void set_level(const std::string& name) {
  int level = -1;
  for (int i = 0; i < kLevels; ++i) {
    if (name == kNames[i]) level = i;
  }
  TORCH_CHECK_VALUE(level >= 0, "CPU instruction-set level must be baseline, avx2 or avx512, got '", name, "'");
  TORCH_CHECK_VALUE(level <= supported(), "CPU instruction-set level ", name, " is above what this CPU supports (",
                    kNames[supported()], "): its kernels would stop on an illegal instruction");
  g_active.store(level, std::memory_order_relaxed);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mibcore, m) {
  m.def("cpu_isa() -> str", &describe);
  m.def("set_cpu_isa(str level) -> ()", &set_level);
}

}  // namespace isa
}  // namespace mibcore
