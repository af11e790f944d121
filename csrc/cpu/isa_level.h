// The instruction-set levels of the CPU kernels, and the level a standalone build gets.
//
// The extension compiles every kernel file once per level (isa_foreach.h defines MIBCORE_ISA
// and MIBCORE_ISA_LEVEL for each pass and sets `#pragma GCC target`). A pragma target does not
// define __AVX2__ or __AVX512F__ in C++, so per-level code tests MIBCORE_ISA_LEVEL, never the
// compiler's ISA macros. A standalone build (the C++ unit tests) gets the level its -march
// gives. Per-level code lives in namespace mibcore::MIBCORE_ISA, so that inline functions
// compiled for different levels never share a symbol (the linker would keep one of them,
// perhaps the AVX-512 one on an AVX2 CPU).
#pragma once

#define MIBCORE_ISA_BASELINE 0
#define MIBCORE_ISA_AVX2 1    // AVX2, FMA, F16C, BMI1/2 (x86-64-v3)
#define MIBCORE_ISA_AVX512 2  // AVX-512 F, BW, VL, DQ on top of AVX2

// (Not while isa_foreach.h compiles a kernel file: its passes define the level themselves.)
#if !defined(MIBCORE_ISA_LEVEL) && !defined(MIBCORE_ISA_FILE)
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
    defined(__AVX2__) && defined(__FMA__) && defined(__BMI2__) && defined(__F16C__)
#define MIBCORE_ISA_LEVEL MIBCORE_ISA_AVX512
#define MIBCORE_ISA avx512
#elif defined(__AVX2__) && defined(__FMA__) && defined(__BMI2__) && defined(__F16C__)
#define MIBCORE_ISA_LEVEL MIBCORE_ISA_AVX2
#define MIBCORE_ISA avx2
#else
#define MIBCORE_ISA_LEVEL MIBCORE_ISA_BASELINE
#define MIBCORE_ISA baseline
#endif
#endif

// The levels above the baseline are compiled on x86-64, unless the build asks for the baseline
// only (MIBCORE_CPU_BASELINE_ONLY=1 in setup.py: the CUDA-torch compile check, which is about
// the CUDA host code, saves two thirds of the CPU kernels' compile time).
#if defined(__x86_64__) && !defined(MIBCORE_ISA_BASELINE_ONLY)
#define MIBCORE_ISA_DISPATCH 1
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// The storage types the per-level loads and stores take, declared (the kernels include their
// definitions first, with torch; the C++ tests, which have no torch, use fp32 only).
namespace c10 {
struct Half;
struct BFloat16;
}  // namespace c10
