// GNU vector types one register wide at each level, and helpers, for the CPU kernels'
// register-blocked loops.
//
// g++ keeps a handful of these vectors in registers where it would spill plain arrays of
// accumulators. One register per vector at every level (64 bytes with AVX-512, 32 with AVX2,
// 16 with SSE2): a 64-byte vector at the AVX2 level is a pair of registers, and the kernels'
// 8-accumulator blocks then spill.
// Per-level code (isa_level.h): no include guard, the kernel file includes it once per pass.
#include "isa_level.h"

#include <cstdint>
#include <cstring>
#include <memory>

namespace mibcore {
namespace MIBCORE_ISA {
namespace cpu {

constexpr int kVecBytes = MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512 ? 64 : MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2 ? 32 : 16;

// Declared per type: the vector_size attribute is ignored on a dependent type.
typedef float VecF __attribute__((vector_size(kVecBytes)));
typedef double VecD __attribute__((vector_size(kVecBytes)));
template <typename T> struct Vec;
template <> struct Vec<float> { using type = VecF; };
template <> struct Vec<double> { using type = VecD; };

template <typename Vec, typename T>
inline Vec load_vec(const T* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}

template <typename Vec, typename T>
inline void store_vec(T* p, const Vec& v) {
  std::memcpy(p, &v, sizeof(Vec));
}

// Scratch whose every element the kernels write before reading: std::vector would zero it
// first, which at the paper's sizes costs as much as the arithmetic.
template <typename T>
using Buffer = std::unique_ptr<T[]>;

template <typename T>
Buffer<T> uninitialized(int64_t n) {
  return Buffer<T>(new T[static_cast<size_t>(n)]);
}

}  // namespace cpu
}  // namespace MIBCORE_ISA
}  // namespace mibcore
