// Run-time choice of the CPU kernels' instruction set, as ATen's DispatchStub does it.
//
// Each kernel file is compiled once per level (isa_foreach.h: baseline, AVX2, AVX-512, each
// pass in its own namespace mibcore::<level>) and registers, for the CPU, a trampoline that
// calls the level in use: the highest this CPU and its OS support, or a lower one chosen with
// MIBCORE_CPU_ISA (read by the Python package at import) or set_cpu_isa (the tests run every
// level the machine has). A level above what the CPU has is refused: it would die on an
// illegal instruction.
#pragma once

#include <array>
#include <atomic>
#include <string>

#include "isa_level.h"

namespace mibcore {
namespace isa {

constexpr int kLevels = 3;
constexpr std::array<const char*, kLevels> kNames = {"baseline", "avx2", "avx512"};

extern std::atomic<int> g_active;  // the level the kernels use now

int supported();  // the highest level this CPU and OS support
inline int active() { return g_active.load(std::memory_order_relaxed); }

// Kernel<B, V2, V5>::call runs the level in use: one relaxed load and a switch.
template <auto Baseline, auto Avx2, auto Avx512>
struct Kernel;

template <typename R, typename... A, R (*Baseline)(A...), R (*Avx2)(A...), R (*Avx512)(A...)>
struct Kernel<Baseline, Avx2, Avx512> {
  static R call(A... args) {
    switch (active()) {
      case MIBCORE_ISA_AVX512:
        return Avx512(args...);
      case MIBCORE_ISA_AVX2:
        return Avx2(args...);
      default:
        return Baseline(args...);
    }
  }
};

}  // namespace isa
}  // namespace mibcore

// The CPU kernel `fn` (a function defined in every level's namespace of this file) as one
// function for m.impl. Where only the baseline is compiled (not x86-64), the baseline itself.
#if defined(MIBCORE_ISA_DISPATCH)
#define MIBCORE_CPU_KERNEL(fn) \
  (&::mibcore::isa::Kernel<&::mibcore::baseline::fn, &::mibcore::avx2::fn, &::mibcore::avx512::fn>::call)
#else
#define MIBCORE_CPU_KERNEL(fn) (&::mibcore::baseline::fn)
#endif
