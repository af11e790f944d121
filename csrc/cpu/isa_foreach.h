// Compiles the file named by MIBCORE_ISA_FILE once per instruction-set level, the way
// Highway's foreach_target.h does: each pass defines MIBCORE_ISA (the namespace) and
// MIBCORE_ISA_LEVEL, sets `#pragma GCC target` for the level, and includes the file again.
// Everything the file included before this header (torch, the standard library, csrc/include)
// stays compiled for the baseline, so inline functions outside the per-level namespaces are
// the same in every object and the linker may keep any copy. The per-level headers of
// csrc/cpu have no include guard: the kernel file includes each once per pass.
// Without x86-64 (or MIBCORE_ISA_DISPATCH, isa_level.h) only the baseline pass exists, and
// isa.h registers it directly.
// What per-level code may use, included here first so that it is compiled for the baseline
// (tests/test_build.py checks the built extension: no AVX instruction outside the per-level
// namespaces).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "isa.h"
#include "mibcore/math.h"
#include "mibcore/philox.h"

#ifndef MIBCORE_ISA_FILE
#error "define MIBCORE_ISA_FILE before including isa_foreach.h"
#endif

#if defined(MIBCORE_ISA_DISPATCH)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2")
#define MIBCORE_ISA avx512
#define MIBCORE_ISA_LEVEL MIBCORE_ISA_AVX512
#include MIBCORE_ISA_FILE
#undef MIBCORE_ISA
#undef MIBCORE_ISA_LEVEL
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#define MIBCORE_ISA avx2
#define MIBCORE_ISA_LEVEL MIBCORE_ISA_AVX2
#include MIBCORE_ISA_FILE
#undef MIBCORE_ISA
#undef MIBCORE_ISA_LEVEL
#pragma GCC pop_options
#endif

#define MIBCORE_ISA baseline
#define MIBCORE_ISA_LEVEL MIBCORE_ISA_BASELINE
#include MIBCORE_ISA_FILE
#undef MIBCORE_ISA
#undef MIBCORE_ISA_LEVEL
