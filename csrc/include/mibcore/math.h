// Per-element math shared by the CPU (g++) and CUDA (nvcc) kernels of mibcore.
//
// Everything here is branch-free scalar code on purpose: g++ vectorizes it inside
// `#pragma omp simd` loops (AVX2/AVX-512) and nvcc runs it per thread, so the CPU
// and CUDA backends compute the same numbers. The float versions of exp and log are
// Cephes-style polynomials (about 1 ulp); the double versions call the C library.
// The Triton kernels mirror these functions, under the same names, in mibcore/kernels/_math.py.
// Every constant of the float math (polynomial coefficients, reduction constants, thresholds)
// comes from mibcore/math_tables.h, which the build generates from mibcore/_math_tables.py:
// type none here (tests/test_math_mirror.py checks that no literal of the table is hand-typed).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__has_include)
#if !__has_include("mibcore/math_tables.h")
#error "mibcore/math_tables.h is generated: run `python mibcore/_math_tables.py DIR` and add -IDIR (setup.py and CMakeLists.txt do)"
#endif
#endif
#include "mibcore/math_tables.h"

#if defined(__CUDACC__)
#define MIB_HD __host__ __device__ __forceinline__
#else
// always_inline: a call left in an `omp simd` loop keeps the whole loop scalar.
#define MIB_HD inline __attribute__((always_inline))
#endif

namespace mibcore {

// ---------------------------------------------------------------- bit casts
MIB_HD float bits_to_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
#endif
}

MIB_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
#endif
}

// 2^n as a float for n in [-126, 127] (built from the exponent bits).
MIB_HD float pow2i(int32_t n) { return bits_to_float(static_cast<uint32_t>(n + 127) << 23); }

// ---------------------------------------------------------------- exp
// exp(x) for float: Cephes expf polynomial after reducing x = n*ln2 + r.
// Overflow gives +inf, underflow gives subnormals then 0, NaN propagates.
MIB_HD float fast_exp(float x) {
  float xc = x < kExpMinArg ? kExpMinArg : x;
  xc = xc > kExpMaxArg ? kExpMaxArg : xc;
  float n = floorf(xc * kLog2e + 0.5f);
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float r2 = r * r;
  float p = kExpP0;
  p = p * r + kExpP1;
  p = p * r + kExpP2;
  p = p * r + kExpP3;
  p = p * r + kExpP4;
  p = p * r + kExpP5;
  p = p * r2 + r + 1.0f;
  // Scale by 2^n in two steps so that subnormal results are reached without overflow.
  int32_t ni = static_cast<int32_t>(n);
  int32_t n1 = ni / 2;
  float y = p * pow2i(n1) * pow2i(ni - n1);
  y = (x > kExpMaxArg) ? INFINITY : y;  // above kExpMaxArg exp overflows
  y = (x < kExpMinArg) ? 0.0f : y;      // below kExpMinArg it is 0
  return (x != x) ? x : y;
}

MIB_HD double fast_exp(double x) { return exp(x); }

// ---------------------------------------------------------------- log
// log(x) for float: Cephes logf polynomial on the mantissa. Handles subnormals,
// 0 (-inf), negatives (NaN), +inf and NaN.
MIB_HD float fast_log(float x) {
  bool tiny = x < kMinNormal;
  float xs = tiny ? x * kSubnormalScale : x;  // scale subnormals up by 2^23
  uint32_t bits = float_to_bits(xs);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xffu) - 126;
  e = tiny ? e - 23 : e;
  float m = bits_to_float((bits & 0x007fffffu) | 0x3f000000u);  // mantissa in [0.5, 1)
  bool small = m < kSqrtHalf;
  e = small ? e - 1 : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  float fe = static_cast<float>(e);
  float z = m * m;
  float p = kLogP0;
  p = p * m + kLogP1;
  p = p * m + kLogP2;
  p = p * m + kLogP3;
  p = p * m + kLogP4;
  p = p * m + kLogP5;
  p = p * m + kLogP6;
  p = p * m + kLogP7;
  p = p * m + kLogP8;
  float y = p * m * z;
  y = y + fe * kLn2Lo;
  y = y - 0.5f * z;
  float r = m + y;
  r = r + fe * kLn2Hi;
  r = (x == INFINITY) ? INFINITY : r;
  r = (x == 0.0f) ? -INFINITY : r;
  r = (x < 0.0f) ? NAN : r;
  return (x != x) ? x : r;
}

MIB_HD double fast_log(double x) { return log(x); }

// ---------------------------------------------------------------- softplus family
// kSoftplusThreshold (math_tables.h) is torch.nn.functional.softplus's (beta=1, threshold=20).

// log(1 + t) for t in [0, 1]. Float: 2 atanh(s) with s = t / (2 + t) in [0, 1/3], the odd
// series to s^15 (truncation below 1e-9; about 1 ulp in all), one division and no log.
// Double: log(1 + t) corrected by t / ((1 + t) - 1), exact where 1 + t rounds to 1.
MIB_HD float log1p_unit(float t) {
  float s = t / (2.0f + t);
  float s2 = s * s;
  float p = kLog1pUnitP0;  // 1/15, then 1/13, ..., 1/3
  p = p * s2 + kLog1pUnitP1;
  p = p * s2 + kLog1pUnitP2;
  p = p * s2 + kLog1pUnitP3;
  p = p * s2 + kLog1pUnitP4;
  p = p * s2 + kLog1pUnitP5;
  p = p * s2 + kLog1pUnitP6;
  return 2.0f * s + 2.0f * s * s2 * p;
}

MIB_HD double log1p_unit(double t) {
  double u = 1.0 + t;
  double d = u - 1.0;
  return d == 0.0 ? t : log(u) * (t / d);
}

// ---------------------------------------------------------------- std parameterizations
// scale -> std, log std and their derivatives with respect to scale.
enum Parameterization : int64_t { kSoftplus = 0, kLogVar = 1, kStd = 2 };

template <typename T>
struct StdTerms {
  T std;        // standard deviation
  T log_std;    // log(std), finite wherever std underflows to 0 under softplus
  T dstd;       // d std / d scale
  T dlog_std;   // d log(std) / d scale
};

// The parameterization is a template argument so that the per-element loops stay branch-free.
template <int64_t P, typename T>
MIB_HD StdTerms<T> std_terms(T scale, T shift) {
  StdTerms<T> t;
  if constexpr (P == kSoftplus) {
    // std = softplus(x), x = scale + shift, as max(x, 0) + log1p(e) with e = exp(-|x|) in (0, 1]
    // (one exp, no log), and sigmoid(x) = (x > 0 ? 1 : e) / (1 + e) from the same e. Above
    // torch's threshold (x > 20) softplus is x itself. For x < -20, softplus(x) = e^x (1 - e^x / 2
    // + ...), so log std = x and d log std / dx = 1 to working precision; this avoids log(0) = -inf.
    T x = scale + shift;
    T e = fast_exp(x > T(0) ? -x : x);
    T sp = (x > T(0) ? x : T(0)) + log1p_unit(e);
    sp = (x > T(kSoftplusThreshold) || x != x) ? x : sp;
    T sig = (x > T(0) ? T(1) : e) / (T(1) + e);
    bool deep = x < T(-kSoftplusThreshold);
    T safe_sp = deep ? T(1) : sp;
    t.std = sp;
    t.log_std = deep ? x : fast_log(safe_sp);
    t.dstd = sig;
    t.dlog_std = deep ? T(1) : sig / safe_sp;
  } else if constexpr (P == kLogVar) {
    t.std = fast_exp(T(0.5) * scale);
    t.log_std = T(0.5) * scale;
    t.dstd = T(0.5) * t.std;
    t.dlog_std = T(0.5);
  } else {
    t.std = scale;
    t.log_std = fast_log(scale);
    t.dstd = T(1);
    t.dlog_std = T(1) / scale;
  }
  return t;
}

// ---------------------------------------------------------------- KL(N(mu, std^2) || N(0, 1))
// Written once over an arithmetic vocabulary A (splat, mul, sub, fmadd, fnmadd, fmsub) so that
// the scalar code (ScalarArith: separate multiply and add, as written) and the explicit SIMD code
// of csrc/cpu (cpu::Simd: fused multiply-adds) share the formula and its order of operations.
template <typename T>
struct ScalarArith {
  static MIB_HD T splat(T v) { return v; }
  static MIB_HD T mul(T a, T b) { return a * b; }
  static MIB_HD T sub(T a, T b) { return a - b; }
  static MIB_HD T fmadd(T a, T b, T c) { return a * b + c; }
  static MIB_HD T fnmadd(T a, T b, T c) { return c - a * b; }
  static MIB_HD T fmsub(T a, T b, T c) { return a * b - c; }
};

// 0.5 (mu^2 + std^2 - 2 log std - 1), summed left to right.
template <typename A, typename V>
MIB_HD V kl_element_of(V mu, V std, V log_std) {
  const V k = A::fnmadd(A::splat(2.0f), log_std, A::fmadd(mu, mu, A::mul(std, std)));
  return A::mul(A::splat(0.5f), A::sub(k, A::splat(1.0f)));
}

// d KL_element / d scale = std d std - d log std (d KL_element / d mu is mu).
template <typename A, typename V>
MIB_HD V kl_element_dscale_of(V std, V dstd, V dlog_std) {
  return A::fmsub(std, dstd, dlog_std);
}

template <typename T>
MIB_HD T kl_element(T mu, const StdTerms<T>& s) {
  return kl_element_of<ScalarArith<T>>(mu, s.std, s.log_std);
}

template <typename T>
MIB_HD T kl_element_dscale(const StdTerms<T>& s) {
  return kl_element_dscale_of<ScalarArith<T>>(s.std, s.dstd, s.dlog_std);
}

}  // namespace mibcore
