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

// Softplus's terms in three steps (std_terms_ps composes them; std_terms_tile runs each as a
// pass): e = exp(-|x|), then std = softplus(x) from it, then the terms that need std.
inline V softplus_exp(V x) {
  const V zero = S::zero();
  return exp_ps(S::select(S::gt(x, zero), S::sub(zero, x), x));  // e^-|x| (NaN stays NaN)
}

inline V softplus_of(V x, V e) {
  const V sp = S::add(S::select(S::gt(x, S::zero()), x, S::zero()), log1p_unit_ps(e));
  return S::select(S::either(S::gt(x, splat(kSoftplusThreshold)), S::is_nan(x)), x, sp);
}

template <bool kForward>
inline StdTermsPs softplus_terms(V x, V e, V sp) {
  const V one = splat(1.0f);
  const M deep = S::lt(x, splat(-kSoftplusThreshold));
  const V safe_sp = S::select(deep, one, sp);
  StdTermsPs t;
  t.std = sp;
  if constexpr (kForward) {
    t.log_std = S::select(deep, x, log_ps<kPositiveOrInf>(safe_sp));
  } else {
    const V sig = S::div(S::select(S::gt(x, S::zero()), one, e), S::add(one, e));
    t.dstd = sig;
    t.dlog_std = S::select(deep, one, S::div(sig, safe_sp));
  }
  return t;
}

template <int64_t P, bool kForward>  // forward: std and log std; backward: std, d std, d log std
inline StdTermsPs std_terms_ps(V scale, float shift) {
  const V one = splat(1.0f);
  StdTermsPs t;
  if constexpr (P == kSoftplus) {
    const V x = S::add(scale, splat(shift));
    const V e = softplus_exp(x);
    t = softplus_terms<kForward>(x, e, softplus_of(x, e));
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

// std_terms_ps of up to kMax elements as arrays (whole vectors: up to n rounded up to S::kN).
template <int64_t kMax>
struct StdTermsTile {
  static_assert(kMax % Simd::kN == 0);
  alignas(64) float e[kMax], std[kMax], log_std[kMax], dstd[kMax], dlog_std[kMax];
};

// std_terms_ps<P, kForward> of scale[0 .. n) into `t`, n <= kMax. Softplus in passes, with the
// same arithmetic: its chain (exp, then a division and log1p, then a log or two divisions) is
// 150-200 cycles long, so one pass keeps about one 16-lane step in Zen 3's ~256-instruction
// window (IPC ~1.7); split after exp and after softplus, several steps of a pass overlap (per 4M
// fp32 elements, one core: forward tile 15.0 -> 9.4 ms, backward tile 8.0 -> 5.8 ms).
template <int64_t P, bool kForward, int64_t kMax, typename scalar_t>
inline void std_terms_tile(const scalar_t* scale, int64_t n, float shift, StdTermsTile<kMax>& t) {
  auto scale_at = [&](int64_t j) { return S::load(scale + j, S::tail(j, n)); };
  const S::Tail all = S::tail(0, S::kN);
  auto at = [&](const float* a, int64_t j) { return S::load(a + j, all); };
  auto put = [&](float* a, int64_t j, V v) { S::store(a + j, all, v); };
  auto put_terms = [&](int64_t j, const StdTermsPs& s) {
    if constexpr (kForward) {
      put(t.log_std, j, s.log_std);
    } else {
      put(t.dstd, j, s.dstd);
      put(t.dlog_std, j, s.dlog_std);
    }
  };
  if constexpr (P == kSoftplus) {
    auto x_at = [&](int64_t j) { return S::add(scale_at(j), splat(shift)); };
    for (int64_t j = 0; j < n; j += S::kN) put(t.e, j, softplus_exp(x_at(j)));
    for (int64_t j = 0; j < n; j += S::kN) put(t.std, j, softplus_of(x_at(j), at(t.e, j)));
    for (int64_t j = 0; j < n; j += S::kN) put_terms(j, softplus_terms<kForward>(x_at(j), at(t.e, j), at(t.std, j)));
  } else {
    for (int64_t j = 0; j < n; j += S::kN) {
      const StdTermsPs s = std_terms_ps<P, kForward>(scale_at(j), shift);
      put(t.std, j, s.std);
      put_terms(j, s);
    }
  }
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
