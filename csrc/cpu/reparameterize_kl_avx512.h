// AVX-512 versions of the per-element math of reparameterize_kl (fp32 arithmetic, every
// parameterization), for the CPU kernels. Free of torch headers: the C++ tests include it.
//
// g++ vectorizes the scalar functions of csrc/include/mibcore/math.h and philox.h, but builds
// the exponent/mantissa split of log and the 2^n scaling of exp from integer bit operations,
// and keeps every special-case select. Here vgetexpps/vgetmantps split log's argument and
// vscalefps scales exp's result: the same reductions and the same Cephes polynomials, with
// the same reduced arguments (so the results agree with the scalar functions to the last bit
// or so, within the fp32 rounding DESIGN.md section 5 allows), in about half the instructions.
// Selects for special values are kept only where the argument can hold them.
// Per-level code (isa_level.h): no include guard, the kernel file includes it once per pass.
#include "isa_level.h"

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512


#include <cstdint>

#include "mibcore/math.h"

namespace mibcore {
namespace MIBCORE_ISA {
namespace cpu {
namespace avx512 {

inline __m512 splat(float v) { return _mm512_set1_ps(v); }

// fast_exp (math.h): Cephes polynomial after x = n ln2 + r; one vscalefps for 2^n (exact where
// the result is normal, one rounding where it is subnormal, as the two-step scaling).
inline __m512 exp_ps(__m512 x) {
  const __m512 max_arg = splat(88.72283935546875f), min_arg = splat(-103.97208404541015f);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, min_arg), max_arg);
  const __m512 n = _mm512_roundscale_ps(_mm512_fmadd_ps(xc, splat(1.44269504088896341f), splat(0.5f)),
                                        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, splat(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, splat(-2.12194440e-4f), r);
  const __m512 r2 = _mm512_mul_ps(r, r);
  __m512 p = splat(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, splat(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, splat(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, splat(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, splat(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, splat(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), splat(1.0f));
  __m512 y = _mm512_scalef_ps(p, n);
  y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, max_arg, _CMP_GT_OQ), splat(INFINITY));
  y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, min_arg, _CMP_LT_OQ), _mm512_setzero_ps());
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);  // NaN stays NaN
}

// fast_log (math.h). The mantissa m in [1, 2) and exponent e from vgetmantps/vgetexpps,
// folded to m in [sqrt(1/2), sqrt(2)) exactly as the Cephes reduction does (m / 2 is exact).
// The arithmetic is right for x > 0 (normal or subnormal) and NaN; kSpecials adds the selects
// for what the argument can otherwise hold: kPositive none, kPositiveOrInf +inf, kAny also
// 0 (-inf) and negatives (NaN).
enum LogDomain { kPositive, kPositiveOrInf, kAny };

template <LogDomain kDomain>
inline __m512 log_ps(__m512 x) {
  __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
  __m512 e = _mm512_getexp_ps(x);
  const __mmask16 big = _mm512_cmp_ps_mask(m, splat(2.0f * 0.707106781186547524f), _CMP_GE_OQ);
  m = _mm512_mask_mul_ps(m, big, m, splat(0.5f));
  e = _mm512_mask_add_ps(e, big, e, splat(1.0f));
  m = _mm512_sub_ps(m, splat(1.0f));
  const __m512 z = _mm512_mul_ps(m, m);
  __m512 p = splat(7.0376836292e-2f);
  p = _mm512_fmadd_ps(p, m, splat(-1.1514610310e-1f));
  p = _mm512_fmadd_ps(p, m, splat(1.1676998740e-1f));
  p = _mm512_fmadd_ps(p, m, splat(-1.2420140846e-1f));
  p = _mm512_fmadd_ps(p, m, splat(1.4249322787e-1f));
  p = _mm512_fmadd_ps(p, m, splat(-1.6668057665e-1f));
  p = _mm512_fmadd_ps(p, m, splat(2.0000714765e-1f));
  p = _mm512_fmadd_ps(p, m, splat(-2.4999993993e-1f));
  p = _mm512_fmadd_ps(p, m, splat(3.3333331174e-1f));
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, m), z);
  y = _mm512_fmadd_ps(e, splat(-2.12194440e-4f), y);
  y = _mm512_fnmadd_ps(splat(0.5f), z, y);
  __m512 r = _mm512_add_ps(m, y);
  r = _mm512_fmadd_ps(e, splat(0.693359375f), r);
  if constexpr (kDomain != kPositive) {
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, splat(INFINITY), _CMP_EQ_OQ), x);
  }
  if constexpr (kDomain == kAny) {
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_EQ_OQ), splat(-INFINITY));
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), splat(NAN));
  }
  return r;
}

// log1p_unit (math.h): log(1 + t) for t in [0, 1] from the atanh series.
inline __m512 log1p_unit_ps(__m512 t) {
  const __m512 s = _mm512_div_ps(t, _mm512_add_ps(splat(2.0f), t));
  const __m512 s2 = _mm512_mul_ps(s, s);
  __m512 p = splat(1.0f / 15.0f);
  p = _mm512_fmadd_ps(p, s2, splat(1.0f / 13.0f));
  p = _mm512_fmadd_ps(p, s2, splat(1.0f / 11.0f));
  p = _mm512_fmadd_ps(p, s2, splat(1.0f / 9.0f));
  p = _mm512_fmadd_ps(p, s2, splat(1.0f / 7.0f));
  p = _mm512_fmadd_ps(p, s2, splat(1.0f / 5.0f));
  p = _mm512_fmadd_ps(p, s2, splat(1.0f / 3.0f));
  const __m512 two_s = _mm512_add_ps(s, s);
  return _mm512_fmadd_ps(_mm512_mul_ps(two_s, s2), p, two_s);
}

// std_terms<P> (math.h): std and the terms the KL (forward) or the gradients (backward) need.
struct StdTermsPs {
  __m512 std, log_std, dstd, dlog_std;
};

template <int64_t P, bool kForward>  // forward: std and log std; backward: std, d std, d log std
inline StdTermsPs std_terms_ps(__m512 scale, float shift) {
  const __m512 zero = _mm512_setzero_ps(), one = splat(1.0f);
  StdTermsPs t;
  if constexpr (P == kSoftplus) {
    const __m512 x = _mm512_add_ps(scale, splat(shift));
    const __mmask16 positive = _mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ);
    const __m512 neg_abs = _mm512_mask_sub_ps(x, positive, zero, x);  // -|x| (NaN stays NaN)
    const __m512 e = exp_ps(neg_abs);
    __m512 sp = _mm512_add_ps(_mm512_maskz_mov_ps(positive, x), log1p_unit_ps(e));
    const __mmask16 linear = _mm512_cmp_ps_mask(x, splat(kSoftplusThreshold), _CMP_GT_OQ) |
                             _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    sp = _mm512_mask_mov_ps(sp, linear, x);
    const __mmask16 deep = _mm512_cmp_ps_mask(x, splat(-kSoftplusThreshold), _CMP_LT_OQ);
    const __m512 safe_sp = _mm512_mask_mov_ps(sp, deep, one);
    t.std = sp;
    if constexpr (kForward) {
      t.log_std = _mm512_mask_mov_ps(log_ps<kPositiveOrInf>(safe_sp), deep, x);
    } else {
      const __m512 sig = _mm512_div_ps(_mm512_mask_mov_ps(e, positive, one), _mm512_add_ps(one, e));
      t.dstd = sig;
      t.dlog_std = _mm512_mask_mov_ps(_mm512_div_ps(sig, safe_sp), deep, one);
    }
  } else if constexpr (P == kLogVar) {
    t.log_std = _mm512_mul_ps(splat(0.5f), scale);
    t.std = exp_ps(t.log_std);
    t.dstd = _mm512_mul_ps(splat(0.5f), t.std);
    t.dlog_std = splat(0.5f);
  } else {
    t.std = scale;
    if constexpr (kForward) t.log_std = log_ps<kAny>(scale);
    t.dstd = one;
    t.dlog_std = _mm512_div_ps(one, scale);
  }
  return t;
}

// uniform_from_bits (philox.h): ((r >> 8) + 1) * 2^-24 in (0, 1].
inline __m512 uniform_ps(__m512i r) {
  const __m512i k = _mm512_add_epi32(_mm512_srli_epi32(r, 8), _mm512_set1_epi32(1));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(k), splat(5.9604644775390625e-08f));
}

// box_muller (philox.h) on 16 pairs: the two normals (rad cos, rad sin) of each.
inline void box_muller_ps(__m512i ra, __m512i rb, __m512& na, __m512& nb) {
  const __m512 rad = _mm512_sqrt_ps(_mm512_mul_ps(splat(-2.0f), log_ps<kPositive>(uniform_ps(ra))));
  // sincos_turns: the nearest quarter turn, then Cephes sinf/cosf on [-pi/4, pi/4].
  const __m512 t = uniform_ps(rb);
  const __m512 quarter = _mm512_roundscale_ps(_mm512_fmadd_ps(t, splat(4.0f), splat(0.5f)),
                                              _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_fnmadd_ps(quarter, splat(0.25f), t);
  const __m512 x = _mm512_mul_ps(f, splat(6.28318530717958648f));
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 s = _mm512_fmadd_ps(splat(-1.9515295891e-4f), z, splat(8.3321608736e-3f));
  s = _mm512_fmadd_ps(s, z, splat(-1.6666654611e-1f));
  s = _mm512_fmadd_ps(_mm512_mul_ps(s, z), x, x);
  __m512 c = _mm512_fmadd_ps(splat(2.443315711809948e-5f), z, splat(-1.388731625493765e-3f));
  c = _mm512_fmadd_ps(c, z, splat(4.166664568298827e-2f));
  c = _mm512_fnmadd_ps(splat(0.5f), z, _mm512_mul_ps(_mm512_mul_ps(c, z), z));
  c = _mm512_add_ps(c, splat(1.0f));
  const __m512i q = _mm512_and_si512(_mm512_cvttps_epi32(quarter), _mm512_set1_epi32(3));
  const __mmask16 odd = _mm512_test_epi32_mask(q, _mm512_set1_epi32(1));
  const __m512 a = _mm512_mask_mov_ps(c, odd, s);  // cos x, or sin x for odd quarters
  const __m512 b = _mm512_mask_mov_ps(s, odd, c);
  // sin < 0 in quarters 2 and 3 (q & 2), cos < 0 in quarters 1 and 2 ((q + 1) & 2).
  const __m512i two = _mm512_set1_epi32(2);
  const __mmask16 sin_negative = _mm512_test_epi32_mask(q, two);
  const __mmask16 cos_negative = _mm512_test_epi32_mask(_mm512_add_epi32(q, _mm512_set1_epi32(1)), two);
  const __m512 sign = splat(-0.0f);
  const __m512 sin_v = _mm512_mask_xor_ps(b, sin_negative, b, sign);
  const __m512 cos_v = _mm512_mask_xor_ps(a, cos_negative, a, sign);
  na = _mm512_mul_ps(rad, cos_v);
  nb = _mm512_mul_ps(rad, sin_v);
}

// out[4 k + i] = n_i[k] for k < 16: the element order of the randomness contract.
inline void interleave4(__m512 n0, __m512 n1, __m512 n2, __m512 n3, float* out) {
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

// The normals of blocks k < blocks (a multiple of 16) from their Philox outputs, in element
// order: out[4 k + i] = normal i of block k.
inline void normals_from_blocks(const uint32_t* r0, const uint32_t* r1, const uint32_t* r2, const uint32_t* r3,
                                int64_t blocks, float* out) {
  for (int64_t k = 0; k < blocks; k += 16) {
    __m512 n0, n1, n2, n3;
    box_muller_ps(_mm512_loadu_si512(r0 + k), _mm512_loadu_si512(r1 + k), n0, n1);
    box_muller_ps(_mm512_loadu_si512(r2 + k), _mm512_loadu_si512(r3 + k), n2, n3);
    interleave4(n0, n1, n2, n3, out + 4 * k);
  }
}

}  // namespace avx512
}  // namespace cpu
}  // namespace MIBCORE_ISA
}  // namespace mibcore

#endif  // MIBCORE_ISA_AVX512
