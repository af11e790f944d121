// Explicit SIMD versions of the per-element math of reparameterize_kl (fp32 arithmetic, every
// parameterization), for the CPU kernels at the AVX2 and AVX-512 levels, written once over
// simd_cpu.h's vocabulary. Free of torch headers: the C++ tests include it.
//
// g++ vectorizes the scalar functions of csrc/include/mibcore/math.h and philox.h, but keeps
// every special-case select and builds each step from generic operations. Here the exponent
// split of log and the 2^n scaling of exp are one instruction each with AVX-512 (vgetexpps /
// vgetmantps, vscalefps) and short integer sequences with AVX2: the same reductions and the same
// Cephes polynomials, with the same reduced arguments (so the results agree with the scalar
// functions to the last bit or so, within the fp32 rounding DESIGN.md section 5 allows).
// Selects for special values are kept only where the argument can hold them. The constants are
// those of math.h, from the generated mibcore/math_tables.h (mibcore/_math_tables.py).
// Per-level code (isa_level.h): no include guard, the kernel file includes it once per pass,
// after philox_cpu.h (which brings simd_cpu.h).
#include "isa_level.h"

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2

#include <cstdint>

#include "mibcore/math.h"

namespace mibcore {
namespace MIBCORE_ISA {
namespace cpu {
namespace simd {

using S = Simd;
using V = Simd::V;
using M = Simd::M;

inline V splat(float v) { return S::splat(v); }

// fast_exp (math.h): Cephes polynomial after x = n ln2 + r, then p 2^n.
inline V exp_ps(V x) {
  const V max_arg = splat(kExpMaxArg), min_arg = splat(kExpMinArg);
  const V xc = S::min(S::max(x, min_arg), max_arg);
  const V n = S::floor(S::fmadd(xc, splat(kLog2e), splat(0.5f)));
  V r = S::fnmadd(n, splat(kLn2Hi), xc);
  r = S::fnmadd(n, splat(kLn2Lo), r);
  const V r2 = S::mul(r, r);
  V p = splat(kExpP0);
  p = S::fmadd(p, r, splat(kExpP1));
  p = S::fmadd(p, r, splat(kExpP2));
  p = S::fmadd(p, r, splat(kExpP3));
  p = S::fmadd(p, r, splat(kExpP4));
  p = S::fmadd(p, r, splat(kExpP5));
  p = S::add(S::fmadd(p, r2, r), splat(1.0f));
  V y = S::scale_pow2(p, n);
  y = S::select(S::gt(x, max_arg), splat(INFINITY), y);
  y = S::select(S::lt(x, min_arg), S::zero(), y);
  return S::select(S::is_nan(x), x, y);  // NaN stays NaN
}

// fast_log (math.h). The mantissa m in [1, 2) and exponent e (S::split_exponent), folded to m
// in [sqrt(1/2), sqrt(2)) exactly as the Cephes reduction does (m / 2 is exact). The arithmetic
// is right for x > 0 (normal or subnormal); kDomain adds the selects for what the argument can
// otherwise hold: kPositive none, kPositiveOrInf +inf and NaN, kAny also 0 (-inf) and
// negatives (NaN).
enum LogDomain { kPositive, kPositiveOrInf, kAny };

template <LogDomain kDomain>
inline V log_ps(V x) {
  V m, e;
  S::split_exponent(x, m, e);
  const M big = S::ge(m, splat(2.0f * kSqrtHalf));
  m = S::select(big, S::mul(m, splat(0.5f)), m);
  e = S::select(big, S::add(e, splat(1.0f)), e);
  m = S::sub(m, splat(1.0f));
  const V z = S::mul(m, m);
  V p = splat(kLogP0);
  p = S::fmadd(p, m, splat(kLogP1));
  p = S::fmadd(p, m, splat(kLogP2));
  p = S::fmadd(p, m, splat(kLogP3));
  p = S::fmadd(p, m, splat(kLogP4));
  p = S::fmadd(p, m, splat(kLogP5));
  p = S::fmadd(p, m, splat(kLogP6));
  p = S::fmadd(p, m, splat(kLogP7));
  p = S::fmadd(p, m, splat(kLogP8));
  V y = S::mul(S::mul(p, m), z);
  y = S::fmadd(e, splat(kLn2Lo), y);
  y = S::fnmadd(splat(0.5f), z, y);
  V r = S::add(m, y);
  r = S::fmadd(e, splat(kLn2Hi), r);
  if constexpr (kDomain != kPositive) {
    r = S::select(S::eq(x, splat(INFINITY)), x, r);
    r = S::select(S::is_nan(x), x, r);
  }
  if constexpr (kDomain == kAny) {
    r = S::select(S::eq(x, S::zero()), splat(-INFINITY), r);
    r = S::select(S::lt(x, S::zero()), splat(NAN), r);
  }
  return r;
}

// log1p_unit (math.h): log(1 + t) for t in [0, 1] from the atanh series.
inline V log1p_unit_ps(V t) {
  const V s = S::div(t, S::add(splat(2.0f), t));
  const V s2 = S::mul(s, s);
  V p = splat(kLog1pUnitP0);
  p = S::fmadd(p, s2, splat(kLog1pUnitP1));
  p = S::fmadd(p, s2, splat(kLog1pUnitP2));
  p = S::fmadd(p, s2, splat(kLog1pUnitP3));
  p = S::fmadd(p, s2, splat(kLog1pUnitP4));
  p = S::fmadd(p, s2, splat(kLog1pUnitP5));
  p = S::fmadd(p, s2, splat(kLog1pUnitP6));
  const V two_s = S::add(s, s);
  return S::fmadd(S::mul(two_s, s2), p, two_s);
}

// std_terms<P> (math.h): std and the terms the KL (forward) or the gradients (backward) need.
struct StdTermsPs {
  V std, log_std, dstd, dlog_std;
};

template <int64_t P, bool kForward>  // forward: std and log std; backward: std, d std, d log std
inline StdTermsPs std_terms_ps(V scale, float shift) {
  const V zero = S::zero(), one = splat(1.0f);
  StdTermsPs t;
  if constexpr (P == kSoftplus) {
    const V x = S::add(scale, splat(shift));
    const M positive = S::gt(x, zero);
    const V neg_abs = S::select(positive, S::sub(zero, x), x);  // -|x| (NaN stays NaN)
    const V e = exp_ps(neg_abs);
    V sp = S::add(S::select(positive, x, zero), log1p_unit_ps(e));
    const M linear = S::either(S::gt(x, splat(kSoftplusThreshold)), S::is_nan(x));
    sp = S::select(linear, x, sp);
    const M deep = S::lt(x, splat(-kSoftplusThreshold));
    const V safe_sp = S::select(deep, one, sp);
    t.std = sp;
    if constexpr (kForward) {
      t.log_std = S::select(deep, x, log_ps<kPositiveOrInf>(safe_sp));
    } else {
      const V sig = S::div(S::select(positive, one, e), S::add(one, e));
      t.dstd = sig;
      t.dlog_std = S::select(deep, one, S::div(sig, safe_sp));
    }
  } else if constexpr (P == kLogVar) {
    t.log_std = S::mul(splat(0.5f), scale);
    t.std = exp_ps(t.log_std);
    t.dstd = S::mul(splat(0.5f), t.std);
    t.dlog_std = splat(0.5f);
  } else {
    t.std = scale;
    if constexpr (kForward) t.log_std = log_ps<kAny>(scale);
    t.dstd = one;
    t.dlog_std = S::div(one, scale);
  }
  return t;
}

// box_muller (philox.h) on S::kN pairs: the two normals (rad cos, rad sin) of each.
inline void box_muller_ps(const uint32_t* ra, const uint32_t* rb, V& na, V& nb) {
  const V rad = S::sqrt(S::mul(splat(-2.0f), log_ps<kPositive>(S::uniform(ra))));
  // sincos_turns: the nearest quarter turn, then Cephes sinf/cosf on [-pi/4, pi/4].
  const V t = S::uniform(rb);
  const V quarter = S::floor(S::fmadd(t, splat(4.0f), splat(0.5f)));
  const V f = S::fnmadd(quarter, splat(0.25f), t);
  const V x = S::mul(f, splat(kTwoPi));
  const V z = S::mul(x, x);
  V s = S::fmadd(splat(kSinP0), z, splat(kSinP1));
  s = S::fmadd(s, z, splat(kSinP2));
  s = S::fmadd(S::mul(s, z), x, x);
  V c = S::fmadd(splat(kCosP0), z, splat(kCosP1));
  c = S::fmadd(c, z, splat(kCosP2));
  c = S::fnmadd(splat(0.5f), z, S::mul(S::mul(c, z), z));
  c = S::add(c, splat(1.0f));
  M odd, sin_negative, cos_negative;
  S::quarter_signs(quarter, odd, sin_negative, cos_negative);
  const V a = S::select(odd, s, c);  // cos x, or sin x for odd quarters
  const V b = S::select(odd, c, s);
  na = S::mul(rad, S::negate_where(cos_negative, a));
  nb = S::mul(rad, S::negate_where(sin_negative, b));
}

// The normals of blocks k < blocks (a multiple of S::kN) from their Philox outputs, in element
// order: out[4 k + i] = normal i of block k.
inline void normals_from_blocks(const uint32_t* r0, const uint32_t* r1, const uint32_t* r2, const uint32_t* r3,
                                int64_t blocks, float* out) {
  for (int64_t k = 0; k < blocks; k += S::kN) {
    V n0, n1, n2, n3;
    box_muller_ps(r0 + k, r1 + k, n0, n1);
    box_muller_ps(r2 + k, r3 + k, n2, n3);
    S::store_interleaved4(n0, n1, n2, n3, out + 4 * k);
  }
}

}  // namespace simd
}  // namespace cpu
}  // namespace MIBCORE_ISA
}  // namespace mibcore

#endif  // MIBCORE_ISA_AVX2
