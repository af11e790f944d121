// fp32, fp16 and bf16 storage <-> fp32 AVX-512 registers, for the CPU kernels: 16 values per
// vector, masked for tails (the lanes off the mask read as 0 and are not written).
// Per-level code (isa_level.h): no include guard, the kernel file includes it once per pass.
#include "isa_level.h"

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512

#include <cstdint>

namespace mibcore {
namespace MIBCORE_ISA {
namespace cpu {
namespace avx512 {

inline __m512 load16(const float* p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }
inline __m512 load16(const c10::Half* p, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
}
inline __m512 load16(const c10::BFloat16* p, __mmask16 mask) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}
inline void store16(float* p, __mmask16 mask, __m512 v) { _mm512_mask_storeu_ps(p, mask, v); }
inline void store16(c10::Half* p, __mmask16 mask, __m512 v) {
  _mm256_mask_storeu_epi16(p, mask, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
// Round to nearest even as c10::BFloat16 does (NaN becomes 0x7fc0).
inline void store16(c10::BFloat16* p, __mmask16 mask, __m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i bias = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1)),
                                        _mm512_set1_epi32(0x7fff));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, bias), 16);
  rounded = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
  _mm256_mask_storeu_epi16(p, mask, _mm512_cvtepi32_epi16(rounded));
}

inline __mmask16 tail_mask(int64_t j, int64_t n) {
  return j + 16 <= n ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
}

}  // namespace avx512
}  // namespace cpu
}  // namespace MIBCORE_ISA
}  // namespace mibcore
#endif
