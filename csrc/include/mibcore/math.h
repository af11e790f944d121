// Per-element math shared by the CPU (g++) and CUDA (nvcc) kernels of mibcore.
//
// Everything here is branch-free scalar code on purpose: g++ vectorizes it inside
// `#pragma omp simd` loops (AVX2/AVX-512) and nvcc runs it per thread, so the CPU
// and CUDA backends compute the same numbers. The float versions of exp and log are
// Cephes-style polynomials (about 1 ulp); the double versions call the C library.
// The Triton kernels mirror these functions in kernels/_math.py.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

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
  const float kMaxArg = 88.72283935546875f;   // above this exp overflows
  const float kMinArg = -103.97208404541015f; // below this exp is 0
  float xc = x < kMinArg ? kMinArg : x;
  xc = xc > kMaxArg ? kMaxArg : xc;
  float n = floorf(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  // Scale by 2^n in two steps so that subnormal results are reached without overflow.
  int32_t ni = static_cast<int32_t>(n);
  int32_t n1 = ni / 2;
  float y = p * pow2i(n1) * pow2i(ni - n1);
  y = (x > kMaxArg) ? INFINITY : y;
  y = (x < kMinArg) ? 0.0f : y;
  return (x != x) ? x : y;
}

MIB_HD double fast_exp(double x) { return exp(x); }

// ---------------------------------------------------------------- log
// log(x) for float: Cephes logf polynomial on the mantissa. Handles subnormals,
// 0 (-inf), negatives (NaN), +inf and NaN.
MIB_HD float fast_log(float x) {
  const float kMinNormal = 1.17549435e-38f;
  bool tiny = x < kMinNormal;
  float xs = tiny ? x * 8388608.0f : x;  // scale subnormals up by 2^23
  uint32_t bits = float_to_bits(xs);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xffu) - 126;
  e = tiny ? e - 23 : e;
  float m = bits_to_float((bits & 0x007fffffu) | 0x3f000000u);  // mantissa in [0.5, 1)
  bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  float fe = static_cast<float>(e);
  float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float y = p * m * z;
  y = y + fe * -2.12194440e-4f;
  y = y - 0.5f * z;
  float r = m + y;
  r = r + fe * 0.693359375f;
  r = (x == INFINITY) ? INFINITY : r;
  r = (x == 0.0f) ? -INFINITY : r;
  r = (x < 0.0f) ? NAN : r;
  return (x != x) ? x : r;
}

MIB_HD double fast_log(double x) { return log(x); }

// ---------------------------------------------------------------- softplus family
// The softplus threshold matches torch.nn.functional.softplus(x, beta=1, threshold=20).
constexpr float kSoftplusThreshold = 20.0f;

// log(1 + t) for t in [0, 1]. Float: 2 atanh(s) with s = t / (2 + t) in [0, 1/3], the odd
// series to s^15 (truncation below 1e-9; about 1 ulp in all), one division and no log.
// Double: log(1 + t) corrected by t / ((1 + t) - 1), exact where 1 + t rounds to 1.
MIB_HD float log1p_unit(float t) {
  float s = t / (2.0f + t);
  float s2 = s * s;
  float p = 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
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
template <typename T>
MIB_HD T kl_element(T mu, const StdTerms<T>& s) {
  return T(0.5) * (mu * mu + s.std * s.std - T(2) * s.log_std - T(1));
}

// d KL_element / d scale (d KL_element / d mu is mu).
template <typename T>
MIB_HD T kl_element_dscale(const StdTerms<T>& s) {
  return s.std * s.dstd - s.dlog_std;
}

}  // namespace mibcore
