// Philox4x32-10 for many consecutive blocks at once, for the CPU kernels.
//
// The same function as mibcore::philox_block (csrc/include/mibcore/philox.h), written with
// GNU vector types because g++ auto-vectorizes the scalar version badly: it widens every
// 32x32->64 multiply to a 64x64 vpmullq plus shuffles. Here each 32-bit word of a block sits
// in the low half of a 64-bit lane (8 blocks per vector), so one vpmuludq gives a round's
// whole 64-bit product: its low half is the next word as it stands, its high half one shift
// away. The high halves of the lanes hold garbage that vpmuludq ignores and the final
// narrowing drops. Four groups of 8 blocks are interleaved so that the multiply latency
// overlaps. AVX2 and SSE2 have the same multiply on narrower registers; other architectures
// mask the garbage off and multiply in 64 bits (slower, same numbers).
// Per-level code (isa_level.h): no include guard, the kernel file includes it once per pass.
#include "isa_level.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
#endif

#include "mibcore/philox.h"
#include "simd_cpu.h"

namespace mibcore {
namespace MIBCORE_ISA {
namespace cpu {

constexpr int64_t kPhiloxLanes = 8;                       // blocks per vector
constexpr int64_t kPhiloxGroups = 4;                      // vectors interleaved per step
constexpr int64_t kPhiloxGroup = kPhiloxGroups * kPhiloxLanes;  // blocks per step

typedef uint64_t VecU64 __attribute__((vector_size(64)));
typedef uint32_t VecU32x8 __attribute__((vector_size(32)));

#define MIB_CPU_INLINE inline __attribute__((always_inline))

// The 64-bit products (low 32 bits of b) * m in every lane: one vpmuludq per register
// (zmm, ymm or, at the baseline, SSE2's xmm). Without it g++ widens to a 64x64 multiply, which
// AVX2 and SSE2 lack: three multiplies, shifts and adds per register.
MIB_CPU_INLINE VecU64 mul_low32(VecU64 b, uint32_t m) {
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
  return reinterpret_cast<VecU64>(
      _mm512_mul_epu32(reinterpret_cast<__m512i>(b), _mm512_set1_epi64(static_cast<long long>(m))));
#elif MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
  __m256i half[2];
  std::memcpy(half, &b, sizeof(b));
  const __m256i mm = _mm256_set1_epi64x(static_cast<long long>(m));
  half[0] = _mm256_mul_epu32(half[0], mm);
  half[1] = _mm256_mul_epu32(half[1], mm);
  std::memcpy(&b, half, sizeof(b));
  return b;
#elif defined(__x86_64__)
  __m128i quarter[4];
  std::memcpy(quarter, &b, sizeof(b));
  const __m128i mm = _mm_set1_epi64x(static_cast<long long>(m));
  for (auto& q : quarter) q = _mm_mul_epu32(q, mm);
  std::memcpy(&b, quarter, sizeof(b));
  return b;
#else
  return (b & 0xffffffffull) * static_cast<uint64_t>(m);
#endif
}

// v in every lane, built in vector registers: g++ builds `VecU64{} + v` below AVX-512 by storing
// v eight times and reloading the stores as vectors, which stalls on store forwarding (a fifth
// of the time of reparameterize_kl's noise at AVX2 went there).
MIB_CPU_INLINE VecU64 splat64(uint64_t v) {
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
  return reinterpret_cast<VecU64>(_mm512_set1_epi64(static_cast<long long>(v)));
#elif MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
  const __m256i half = _mm256_set1_epi64x(static_cast<long long>(v));
  const __m256i both[2] = {half, half};
  VecU64 out;
  std::memcpy(&out, both, sizeof(out));
  return out;
#elif defined(__x86_64__)
  const __m128i quarter = _mm_set1_epi64x(static_cast<long long>(v));
  const __m128i all[4] = {quarter, quarter, quarter, quarter};
  VecU64 out;
  std::memcpy(&out, all, sizeof(out));
  return out;
#else
  return VecU64{} + v;
#endif
}

// The low 32 bits of every lane.
MIB_CPU_INLINE VecU32x8 narrow(VecU64 v) { return __builtin_convertvector(v, VecU32x8); }

// r0..r3[k] = the Philox outputs of block first_block + k, for k < blocks. The arrays must
// hold `blocks` rounded up to a multiple of kPhiloxGroup.
inline void philox_blocks(uint64_t first_block, int64_t blocks, uint64_t seed, uint64_t offset, uint32_t* r0,
                          uint32_t* r1, uint32_t* r2, uint32_t* r3) {
  const VecU64 iota = {0, 1, 2, 3, 4, 5, 6, 7};
  for (int64_t b = 0; b < blocks; b += kPhiloxGroup) {
    VecU64 c0[kPhiloxGroups], c1[kPhiloxGroups], c2[kPhiloxGroups], c3[kPhiloxGroups];
    for (int g = 0; g < kPhiloxGroups; ++g) {
      const VecU64 block = splat64(first_block + static_cast<uint64_t>(b + g * kPhiloxLanes)) + iota;  // 64-bit index
      c0[g] = block;        // low word (the high half is ignored until it is dropped)
      c1[g] = block >> 32;  // high word
      c2[g] = splat64(offset & 0xffffffffull);
      c3[g] = splat64(offset >> 32);
    }
    uint64_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma GCC unroll 10
    for (int round = 0; round < 10; ++round) {
#pragma GCC unroll 4
      for (int g = 0; g < kPhiloxGroups; ++g) {
        const VecU64 p0 = mul_low32(c0[g], kPhiloxM0);
        const VecU64 p1 = mul_low32(c2[g], kPhiloxM1);
        c0[g] = (p1 >> 32) ^ c1[g] ^ splat64(k0);
        c1[g] = p1;
        c2[g] = (p0 >> 32) ^ c3[g] ^ splat64(k1);
        c3[g] = p0;
      }
      k0 = static_cast<uint32_t>(k0 + kPhiloxW0);
      k1 = static_cast<uint32_t>(k1 + kPhiloxW1);
    }
    for (int g = 0; g < kPhiloxGroups; ++g) {
      const int64_t at = b + g * kPhiloxLanes;
      const VecU32x8 w0 = narrow(c0[g]), w1 = narrow(c1[g]), w2 = narrow(c2[g]), w3 = narrow(c3[g]);
      std::memcpy(r0 + at, &w0, sizeof(w0));
      std::memcpy(r1 + at, &w1, sizeof(w1));
      std::memcpy(r2 + at, &w2, sizeof(w2));
      std::memcpy(r3 + at, &w3, sizeof(w3));
    }
  }
}

// `blocks` rounded up to whole interleaved steps: the size philox_blocks writes.
constexpr int64_t philox_buffer_size(int64_t blocks) {
  return (blocks + kPhiloxGroup - 1) / kPhiloxGroup * kPhiloxGroup;
}

#if MIBCORE_ISA_LEVEL == MIBCORE_ISA_AVX2
// The keep-decisions of the contract as one integer compare per 8 words, turned into scales in
// element order without a float conversion: uniform_from_bits(r) = ((r >> 8) + 1) 2^-24 is
// exact, so it is <= keep_prob iff (r >> 8) + 1 <= K = floor(keep_prob 2^24), i.e. iff
// r <= K 2^8 - 1 (nothing is kept when K = 0). AVX2 compares signed 32-bit integers: r <= bound
// iff (r ^ 2^31) <= (bound ^ 2^31). (AVX-512 makes keep-bits instead: dropout_keep_bits.)
struct KeepScales {
  __m256i bound;  // (K 2^8 - 1) ^ 2^31
  __m256 kept;    // the scale of a kept element; 0 when K = 0

  KeepScales(float keep_prob, float inv_keep) {
    const int64_t k = static_cast<int64_t>(static_cast<double>(keep_prob) * 16777216.0);  // floor: >= 0
    bound = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(k * 256 - 1) ^ 0x80000000u));
    kept = _mm256_set1_ps(k == 0 ? 0.0f : inv_keep);
  }
  __m256 scale(const uint32_t* r) const {  // 8 words, in word order
    const __m256i w = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r)),
                                       _mm256_set1_epi32(static_cast<int>(0x80000000u)));
    return _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(w, bound)), kept);
  }
  // The scales of the 32 elements of blocks b .. b + 7 (words r0..r3[b ..]), in element order.
  void scales32(const uint32_t* r0, const uint32_t* r1, const uint32_t* r2, const uint32_t* r3, int64_t b,
                __m256 out[4]) const {
    SimdYmm::interleave4(scale(r0 + b), scale(r1 + b), scale(r2 + b), scale(r3 + b), out);
  }
};
#endif

// scale[c] = dropout scale of flat elements first .. first + n - 1 (Philox, see philox.h).
// `scratch` holds at least dropout_scratch_size(n) words.
constexpr int64_t dropout_scratch_size(int64_t n) { return 8 * philox_buffer_size(n / 4 + 2); }

inline void fill_dropout_scale(uint64_t first, int64_t n, uint64_t seed, uint64_t offset, float keep_prob,
                               float inv_keep, float* scale, uint32_t* scratch) {
  const uint64_t first_block = first >> 2;
  const int64_t skip = static_cast<int64_t>(first & 3);
  const int64_t blocks = (skip + n + 3) / 4;
  const int64_t stride = philox_buffer_size(blocks);
  uint32_t *r0 = scratch, *r1 = r0 + stride, *r2 = r1 + stride, *r3 = r2 + stride;
  float* out = reinterpret_cast<float*>(r3 + stride);
  philox_blocks(first_block, blocks, seed, offset, r0, r1, r2, r3);
#if MIBCORE_ISA_LEVEL == MIBCORE_ISA_AVX2
  const KeepScales keep(keep_prob, inv_keep);
  for (int64_t b = 0; b < blocks; b += 8) {  // (stride is a multiple of 8)
    __m256 v[4];
    keep.scales32(r0, r1, r2, r3, b, v);
    for (int q = 0; q < 4; ++q) _mm256_storeu_ps(out + 4 * b + 8 * q, v[q]);
  }
#elif MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
  // The decisions of S::kN blocks per word as vectors, then interleaved into element order (g++
  // writes the four strided streams of the loop below one lane at a time).
  using S = Simd;
  const S::V keep = S::splat(keep_prob), kept = S::splat(inv_keep), dropped = S::zero();
  auto scale_of = [&](const uint32_t* r) { return S::select(S::le(S::uniform(r), keep), kept, dropped); };
  for (int64_t b = 0; b < blocks; b += S::kN) {  // (stride is a multiple of S::kN)
    S::store_interleaved4(scale_of(r0 + b), scale_of(r1 + b), scale_of(r2 + b), scale_of(r3 + b), out + 4 * b);
  }
#else
#pragma GCC ivdep
  for (int64_t b = 0; b < blocks; ++b) {
    out[4 * b] = uniform_from_bits(r0[b]) <= keep_prob ? inv_keep : 0.0f;
    out[4 * b + 1] = uniform_from_bits(r1[b]) <= keep_prob ? inv_keep : 0.0f;
    out[4 * b + 2] = uniform_from_bits(r2[b]) <= keep_prob ? inv_keep : 0.0f;
    out[4 * b + 3] = uniform_from_bits(r3[b]) <= keep_prob ? inv_keep : 0.0f;
  }
#endif
  std::copy(out + skip, out + skip + n, scale);
}

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512

// Words of scratch dropout_keep_bits needs for n elements.
constexpr int64_t keep_bits_scratch_size(int64_t n) { return 4 * philox_buffer_size((n + 3) / 4); }

// The keep-decisions of flat elements first .. first + n - 1 (first % 4 == 0) as bits: bit i of
// bits[k] is element first + 64 k + i (bits past n are garbage). Bits rather than a float scale
// per element: the decisions of 16 blocks are 4 compare masks, and pdep interleaves them into
// element order (bit 4 b + w = word w of block b) without shuffling vectors.
inline void dropout_keep_bits(uint64_t first, int64_t n, uint64_t seed, uint64_t offset, float keep_prob,
                              uint64_t* bits, uint32_t* scratch) {
  const int64_t blocks = (n + 3) / 4;
  const int64_t stride = philox_buffer_size(blocks);  // a multiple of 16: whole vectors below
  uint32_t *r0 = scratch, *r1 = r0 + stride, *r2 = r1 + stride, *r3 = r2 + stride;
  philox_blocks(first >> 2, blocks, seed, offset, r0, r1, r2, r3);
  const __m512 keep = _mm512_set1_ps(keep_prob);
  // uniform_from_bits(r) <= keep_prob for 16 words (the same exact float arithmetic).
  auto kept = [&](const uint32_t* r) -> uint64_t {
    const __m512i w = _mm512_add_epi32(_mm512_srli_epi32(_mm512_loadu_si512(r), 8), _mm512_set1_epi32(1));
    const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(w), _mm512_set1_ps(kUniformScale));
    return _mm512_cmp_ps_mask(u, keep, _CMP_LE_OQ);
  };
  for (int64_t b = 0; b < blocks; b += 16) {
    bits[b / 16] = _pdep_u64(kept(r0 + b), 0x1111111111111111ull) | _pdep_u64(kept(r1 + b), 0x2222222222222222ull) |
                   _pdep_u64(kept(r2 + b), 0x4444444444444444ull) | _pdep_u64(kept(r3 + b), 0x8888888888888888ull);
  }
}
#endif

}  // namespace cpu
}  // namespace MIBCORE_ISA
}  // namespace mibcore
