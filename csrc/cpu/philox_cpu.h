// Philox4x32-10 for many consecutive blocks at once, for the CPU kernels.
//
// The same function as mibcore::philox_block (csrc/include/mibcore/philox.h), written with
// GNU vector types over 16 blocks because g++ auto-vectorizes the scalar version badly: it
// widens every 32x32->64 multiply to a 64x64 vpmullq plus shuffles. Here the products come
// from vpmuludq (even and odd lanes) and two blends, and two groups of 16 blocks are
// interleaved so that the multiply latency overlaps. Without AVX-512 the generic vector code
// below compiles for any target (slower, same numbers).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
// g++ 12's _mm512_mul_epu32 passes _mm512_undefined_epi32() as its (unused) merge source,
// which -Wmaybe-uninitialized reports at every inlined call.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "mibcore/philox.h"

namespace mibcore {
namespace cpu {

constexpr int64_t kPhiloxLanes = 16;                      // blocks per vector
constexpr int64_t kPhiloxGroup = 2 * kPhiloxLanes;        // blocks per interleaved step

typedef uint32_t VecU32 __attribute__((vector_size(64)));
typedef uint64_t VecU64 __attribute__((vector_size(64)));

#define MIB_CPU_INLINE inline __attribute__((always_inline))

// hi and lo 32 bits of m * b in every lane.
MIB_CPU_INLINE void mulhilo(VecU32 b, uint32_t m, VecU32& hi, VecU32& lo) {
  const VecU64 wide = reinterpret_cast<VecU64>(b);
#if defined(__AVX512F__)
  const __m512i mv = _mm512_set1_epi32(static_cast<int>(m));
  const VecU64 even = reinterpret_cast<VecU64>(_mm512_mul_epu32(reinterpret_cast<__m512i>(wide), mv));
  const VecU64 odd = reinterpret_cast<VecU64>(_mm512_mul_epu32(reinterpret_cast<__m512i>(wide >> 32), mv));
  // even lanes: the 64-bit product of lane 2i sits in lanes (2i, 2i+1); odd: of lane 2i+1.
  hi = reinterpret_cast<VecU32>(
      _mm512_mask_blend_epi32(0xAAAA, reinterpret_cast<__m512i>(even >> 32), reinterpret_cast<__m512i>(odd)));
  lo = reinterpret_cast<VecU32>(
      _mm512_mask_blend_epi32(0xAAAA, reinterpret_cast<__m512i>(even), reinterpret_cast<__m512i>(odd << 32)));
#else
  const VecU64 even = (wide & 0xffffffffull) * static_cast<uint64_t>(m);
  const VecU64 odd = (wide >> 32) * static_cast<uint64_t>(m);
  const VecU32 e = reinterpret_cast<VecU32>(even), o = reinterpret_cast<VecU32>(odd);
  hi = __builtin_shufflevector(e, o, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  lo = __builtin_shufflevector(e, o, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
#endif
}

// r0..r3[k] = the Philox outputs of block first_block + k, for k < blocks. The arrays must
// hold `blocks` rounded up to a multiple of kPhiloxGroup.
inline void philox_blocks(uint64_t first_block, int64_t blocks, uint64_t seed, uint64_t offset, uint32_t* r0,
                          uint32_t* r1, uint32_t* r2, uint32_t* r3) {
  const VecU32 iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  for (int64_t b = 0; b < blocks; b += kPhiloxGroup) {
    VecU32 c0[2], c1[2], c2[2], c3[2];
    for (int g = 0; g < 2; ++g) {
      const uint64_t base = first_block + static_cast<uint64_t>(b + g * kPhiloxLanes);
      const uint32_t base_lo = static_cast<uint32_t>(base);
      c0[g] = base_lo + iota;
      // The block index is 64 bits wide: carry into the high word where the low one wrapped
      // (a true vector comparison is -1, so subtracting it adds 1).
      c1[g] = static_cast<uint32_t>(base >> 32) - reinterpret_cast<VecU32>(c0[g] < base_lo);
      c2[g] = VecU32{} + static_cast<uint32_t>(offset);
      c3[g] = VecU32{} + static_cast<uint32_t>(offset >> 32);
    }
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma GCC unroll 10
    for (int round = 0; round < 10; ++round) {
#pragma GCC unroll 2
      for (int g = 0; g < 2; ++g) {
        VecU32 hi0, lo0, hi1, lo1;
        mulhilo(c0[g], kPhiloxM0, hi0, lo0);
        mulhilo(c2[g], kPhiloxM1, hi1, lo1);
        c0[g] = hi1 ^ c1[g] ^ k0;
        c1[g] = lo1;
        c2[g] = hi0 ^ c3[g] ^ k1;
        c3[g] = lo0;
      }
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    for (int g = 0; g < 2; ++g) {
      const int64_t at = b + g * kPhiloxLanes;
      std::memcpy(r0 + at, &c0[g], sizeof(VecU32));
      std::memcpy(r1 + at, &c1[g], sizeof(VecU32));
      std::memcpy(r2 + at, &c2[g], sizeof(VecU32));
      std::memcpy(r3 + at, &c3[g], sizeof(VecU32));
    }
  }
}

// `blocks` rounded up to whole interleaved steps: the size philox_blocks writes.
constexpr int64_t philox_buffer_size(int64_t blocks) {
  return (blocks + kPhiloxGroup - 1) / kPhiloxGroup * kPhiloxGroup;
}

}  // namespace cpu
}  // namespace mibcore
