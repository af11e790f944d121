// One SIMD vocabulary for the AVX2 and AVX-512 levels, so that the explicit vector math
// (reparameterize_kl_simd.h) is written once: `Simd` is 16 fp32 lanes, one zmm (k-register
// masks) at the AVX-512 level and two ymm (vector masks; SimdYmm is one) at the AVX2 level.
// Each operation is the one instruction (or the shortest sequence) that the level has: AVX-512's vscalefps and
// vgetmantps/vgetexpps become integer exponent arithmetic on AVX2, with the same results
// (csrc/tests/test_math.cpp checks both levels against the scalar functions of math.h).
// Per-level code (isa_level.h): no include guard; philox_cpu.h includes it (and it includes
// avx512_convert_cpu.h), so a kernel file includes philox_cpu.h and none of these two.
#include "isa_level.h"

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2

#include <cstdint>
#include <cstring>

#include "mibcore/math_tables.h"  // the constants of the shared math (generated, mibcore/_math_tables.py)

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
#include "avx512_convert_cpu.h"
#endif

namespace mibcore {
namespace MIBCORE_ISA {
namespace cpu {

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
struct Simd {
  using V = __m512;
  using M = __mmask16;  // a lane mask
  using Tail = __mmask16;  // the lanes of a (possibly partial) load or store
  static constexpr int64_t kN = 16;

  static V splat(float v) { return _mm512_set1_ps(v); }
  static V zero() { return _mm512_setzero_ps(); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V sqrt(V a) { return _mm512_sqrt_ps(a); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }    // a b + c
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a b
  static V fmsub(V a, V b, V c) { return _mm512_fmsub_ps(a, b, c); }    // a b - c
  static V floor(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  static M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M ge(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static M le(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static M eq(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static M is_nan(V a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static M either(M a, M b) { return a | b; }
  static V select(M m, V if_true, V if_false) { return _mm512_mask_mov_ps(if_false, m, if_true); }
  static V negate_where(M m, V v) { return _mm512_mask_xor_ps(v, m, v, _mm512_set1_ps(-0.0f)); }
  // p 2^n for integral n in [-150, 128] (one rounding where the result is subnormal).
  static V scale_pow2(V p, V n) { return _mm512_scalef_ps(p, n); }
  // x = m 2^e with m in [1, 2), for x > 0 (normal or subnormal) or NaN.
  static void split_exponent(V x, V& m, V& e) {
    m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
    e = _mm512_getexp_ps(x);
  }
  // uniform_from_bits (philox.h) of 16 Philox words: ((r >> 8) + 1) 2^-24 in (0, 1].
  static V uniform(const uint32_t* r) {
    const __m512i k = _mm512_add_epi32(_mm512_srli_epi32(_mm512_loadu_si512(r), 8), _mm512_set1_epi32(1));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(k), splat(kUniformScale));
  }
  // For quarter turns q (0..4 as floats): q odd, sin < 0 (q mod 4 in {2, 3}), cos < 0 ({1, 2}).
  static void quarter_signs(V quarter, M& odd, M& sin_negative, M& cos_negative) {
    const __m512i q = _mm512_and_si512(_mm512_cvttps_epi32(quarter), _mm512_set1_epi32(3));
    const __m512i two = _mm512_set1_epi32(2);
    odd = _mm512_test_epi32_mask(q, _mm512_set1_epi32(1));
    sin_negative = _mm512_test_epi32_mask(q, two);
    cos_negative = _mm512_test_epi32_mask(_mm512_add_epi32(q, _mm512_set1_epi32(1)), two);
  }
  // out[4 k + i] = n_i[k] for k < 16: the element order of the randomness contract.
  static void store_interleaved4(V n0, V n1, V n2, V n3, float* out) {
    const __m512 t0 = _mm512_unpacklo_ps(n0, n1), t1 = _mm512_unpackhi_ps(n0, n1);
    const __m512 t2 = _mm512_unpacklo_ps(n2, n3), t3 = _mm512_unpackhi_ps(n2, n3);
    const __m512 u0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
    const __m512 u1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
    const __m512 u2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
    const __m512 u3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
    // u_i holds blocks i, i + 4, i + 8, i + 12 (one per 128-bit lane): transpose the lanes.
    const __m512 v0 = _mm512_shuffle_f32x4(u0, u1, 0x44), v1 = _mm512_shuffle_f32x4(u2, u3, 0x44);
    const __m512 v2 = _mm512_shuffle_f32x4(u0, u1, 0xee), v3 = _mm512_shuffle_f32x4(u2, u3, 0xee);
    _mm512_storeu_ps(out, _mm512_shuffle_f32x4(v0, v1, 0x88));
    _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(v0, v1, 0xdd));
    _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(v2, v3, 0x88));
    _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(v2, v3, 0xdd));
  }
  static Tail tail(int64_t j, int64_t n) { return avx512::tail_mask(j, n); }
  template <typename T>
  static V load(const T* p, Tail t) { return avx512::load16(p, t); }
  template <typename T>
  static void store(T* p, Tail t, V v) { avx512::store16(p, t, v); }
};
#else
struct SimdYmm {
  using V = __m256;
  using M = __m256;  // all-ones lanes
  using Tail = int;  // the number of lanes of a (possibly partial) load or store
  static constexpr int64_t kN = 8;

  static V splat(float v) { return _mm256_set1_ps(v); }
  static V zero() { return _mm256_setzero_ps(); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V sqrt(V a) { return _mm256_sqrt_ps(a); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V fmsub(V a, V b, V c) { return _mm256_fmsub_ps(a, b, c); }
  static V floor(V a) { return _mm256_floor_ps(a); }
  static M gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M ge(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static M le(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
  static M eq(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static M is_nan(V a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static M either(M a, M b) { return _mm256_or_ps(a, b); }
  static V select(M m, V if_true, V if_false) { return _mm256_blendv_ps(if_false, if_true, m); }
  static V negate_where(M m, V v) { return _mm256_xor_ps(v, _mm256_and_ps(m, _mm256_set1_ps(-0.0f))); }
  static __m256i pow2(__m256i n) { return _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23); }
  // p 2^n in two steps, as fast_exp (math.h) does: n1 = n / 2 (toward zero), then 2^(n - n1);
  // both powers are normal for n in [-150, 128], and only the second product can round.
  static V scale_pow2(V p, V n) {
    const __m256i ni = _mm256_cvttps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1);
    const V once = _mm256_mul_ps(p, _mm256_castsi256_ps(pow2(n1)));
    return _mm256_mul_ps(once, _mm256_castsi256_ps(pow2(_mm256_sub_epi32(ni, n1))));
  }
  // x = m 2^e with m in [1, 2), for x > 0 (normal or subnormal: scaled up by 2^23 first, as
  // fast_log does). NaN gives a finite m: the callers select NaN where it can occur.
  static void split_exponent(V x, V& m, V& e) {
    const M tiny = _mm256_cmp_ps(x, splat(kMinNormal), _CMP_LT_OQ);
    const __m256i bits = _mm256_castps_si256(select(tiny, _mm256_mul_ps(x, splat(kSubnormalScale)), x));
    __m256i exponent = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
    exponent = _mm256_sub_epi32(exponent, _mm256_and_si256(_mm256_castps_si256(tiny), _mm256_set1_epi32(23)));
    e = _mm256_cvtepi32_ps(exponent);
    m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                            _mm256_set1_epi32(0x3f800000)));
  }
  static V uniform(const uint32_t* r) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r));
    const __m256i k = _mm256_add_epi32(_mm256_srli_epi32(w, 8), _mm256_set1_epi32(1));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(k), splat(kUniformScale));
  }
  static M bit_set(__m256i q, int bit) {
    const __m256i b = _mm256_set1_epi32(bit);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(q, b), b));
  }
  static void quarter_signs(V quarter, M& odd, M& sin_negative, M& cos_negative) {
    const __m256i q = _mm256_and_si256(_mm256_cvttps_epi32(quarter), _mm256_set1_epi32(3));
    odd = bit_set(q, 1);
    sin_negative = bit_set(q, 2);
    cos_negative = bit_set(_mm256_add_epi32(q, _mm256_set1_epi32(1)), 2);
  }
  // out[q][j] = n_i[k] for 8 q + j = 4 k + i: four vectors of 8 in element order.
  static void interleave4(V n0, V n1, V n2, V n3, V out[4]) {
    const __m256 t0 = _mm256_unpacklo_ps(n0, n1), t1 = _mm256_unpackhi_ps(n0, n1);
    const __m256 t2 = _mm256_unpacklo_ps(n2, n3), t3 = _mm256_unpackhi_ps(n2, n3);
    // u_i holds blocks i and i + 4 (one per 128-bit lane).
    const __m256 u0 = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2)));
    const __m256 u1 = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2)));
    const __m256 u2 = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)));
    const __m256 u3 = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)));
    out[0] = _mm256_permute2f128_ps(u0, u1, 0x20);
    out[1] = _mm256_permute2f128_ps(u2, u3, 0x20);
    out[2] = _mm256_permute2f128_ps(u0, u1, 0x31);
    out[3] = _mm256_permute2f128_ps(u2, u3, 0x31);
  }
  // out[4 k + i] = n_i[k] for k < 8.
  static void store_interleaved4(V n0, V n1, V n2, V n3, float* out) {
    V v[4];
    interleave4(n0, n1, n2, n3, v);
    for (int q = 0; q < 4; ++q) _mm256_storeu_ps(out + 8 * q, v[q]);
  }
  static Tail tail(int64_t j, int64_t n) { return n - j >= kN ? int(kN) : int(n - j); }
  // Loads and stores of fp32, fp16 and bf16 storage; a partial one goes through a full buffer
  // (the lanes past it read as 0 and are not written).
  static V from_storage(const float* p) { return _mm256_loadu_ps(p); }
  static V from_storage(const c10::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static V from_storage(const c10::BFloat16* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static void to_storage(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void to_storage(c10::Half* p, V v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // Round to nearest even as c10::BFloat16 does (NaN becomes 0x7fc0).
  static void to_storage(c10::BFloat16* p, V v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i bias = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1)),
                                          _mm256_set1_epi32(0x7fff));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
    rounded = _mm256_castps_si256(select(is_nan(v), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc0)),
                                         _mm256_castsi256_ps(rounded)));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  template <typename T>
  static V load(const T* p, Tail n) {
    if (n == kN) return from_storage(p);
    T buffer[kN] = {};
    std::memcpy(buffer, p, sizeof(T) * n);
    return from_storage(buffer);
  }
  template <typename T>
  static void store(T* p, Tail n, V v) {
    if (n == kN) return to_storage(p, v);
    T buffer[kN];
    to_storage(buffer, v);
    std::memcpy(p, buffer, sizeof(T) * n);
  }
};

// Simd at the AVX2 level: 16 lanes as two ymm, every operation issued for both in turn. The
// softplus and Box-Muller chains (exp, a division, log) are long, and with one ymm per step
// Zen 3's out-of-order window holds too few of them to fill its pipes; two chains interleaved
// in the instruction stream do better (per 1M elements, isolated: Box-Muller 1.07 -> 0.91 ms,
// forward softplus terms 3.4 -> 2.8 ms, backward 2.07 -> 1.66 ms; the whole reparameterize_kl
// kernel gains 1-5%, its Philox, loads and stores unchanged). The same 16 lanes
// as AVX-512's Simd, so that the loops over it are alike; the per-lane arithmetic is SimdYmm's.
struct Simd {
  using Y = SimdYmm;
  struct V {
    __m256 a, b;  // lanes 0-7, 8-15
  };
  using M = V;
  using Tail = int;
  static constexpr int64_t kN = 16;
  static V splat(float v) { const __m256 s = Y::splat(v); return {s, s}; }
  static V zero() { return {Y::zero(), Y::zero()}; }
#define MIB_PAIR2(name) static V name(V x, V y) { return {Y::name(x.a, y.a), Y::name(x.b, y.b)}; }
#define MIB_PAIR1(name) static V name(V x) { return {Y::name(x.a), Y::name(x.b)}; }
#define MIB_PAIR3(name) static V name(V x, V y, V z) { return {Y::name(x.a, y.a, z.a), Y::name(x.b, y.b, z.b)}; }
  MIB_PAIR2(add) MIB_PAIR2(sub) MIB_PAIR2(mul) MIB_PAIR2(div) MIB_PAIR1(sqrt) MIB_PAIR2(min) MIB_PAIR2(max)
  MIB_PAIR3(fmadd) MIB_PAIR3(fnmadd) MIB_PAIR3(fmsub) MIB_PAIR1(floor)
  MIB_PAIR2(gt) MIB_PAIR2(lt) MIB_PAIR2(ge) MIB_PAIR2(le) MIB_PAIR2(eq) MIB_PAIR1(is_nan) MIB_PAIR2(either)
  MIB_PAIR3(select) MIB_PAIR2(negate_where) MIB_PAIR2(scale_pow2)
#undef MIB_PAIR1
#undef MIB_PAIR2
#undef MIB_PAIR3
  static void split_exponent(V x, V& m, V& e) {
    Y::split_exponent(x.a, m.a, e.a);
    Y::split_exponent(x.b, m.b, e.b);
  }
  static V uniform(const uint32_t* r) { return {Y::uniform(r), Y::uniform(r + 8)}; }
  static void quarter_signs(V q, M& odd, M& sin_negative, M& cos_negative) {
    Y::quarter_signs(q.a, odd.a, sin_negative.a, cos_negative.a);
    Y::quarter_signs(q.b, odd.b, sin_negative.b, cos_negative.b);
  }
  // out[4 k + i] = n_i[k] for k < 16.
  static void store_interleaved4(V n0, V n1, V n2, V n3, float* out) {
    Y::store_interleaved4(n0.a, n1.a, n2.a, n3.a, out);
    Y::store_interleaved4(n0.b, n1.b, n2.b, n3.b, out + 32);
  }
  static Tail tail(int64_t j, int64_t n) { return n - j >= kN ? int(kN) : int(n - j); }
  template <typename T>
  static V load(const T* p, Tail n) {
    if (n == kN) return {Y::from_storage(p), Y::from_storage(p + 8)};
    if (n <= 8) return {Y::load(p, n), Y::zero()};
    return {Y::from_storage(p), Y::load(p + 8, n - 8)};
  }
  template <typename T>
  static void store(T* p, Tail n, V v) {
    if (n == kN) {
      Y::to_storage(p, v.a);
      Y::to_storage(p + 8, v.b);
      return;
    }
    Y::store(p, n < 8 ? n : 8, v.a);
    if (n > 8) Y::store(p + 8, n - 8, v.b);
  }
};
#endif

}  // namespace cpu
}  // namespace MIBCORE_ISA
}  // namespace mibcore

#endif  // MIBCORE_ISA_AVX2
