// C++ unit tests of csrc/include: the float exp/log polynomials against the C library,
// special values, the softplus-family terms, Philox4x32-10 known-answer vectors, and the CPU
// kernels' vectorized Philox (csrc/cpu/philox_cpu.h) and, where built for the AVX2 or AVX-512
// level, the explicit SIMD math of reparameterize_kl (csrc/cpu/reparameterize_kl_simd.h)
// against the scalar functions, lane by lane.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "isa_level.h"  // csrc/cpu: the level this build's -march gives (CMakeLists.txt builds each)
#include "mibcore/philox.h"
#include "philox_cpu.h"  // csrc/cpu
#include "reparameterize_kl_simd.h"  // csrc/cpu

static int failures = 0;
#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (!(cond)) {                                                \
      ++failures;                                                 \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                   \
      std::printf("\n");                                          \
    }                                                             \
  } while (0)

using namespace mibcore;
using namespace mibcore::MIBCORE_ISA;  // the per-level code of csrc/cpu

static double rel_err(double got, double want) {
  return want == 0 ? std::fabs(got) : std::fabs(got - want) / std::fabs(want);
}

static void test_exp_log() {
  double worst_exp = 0, worst_log = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    worst_exp = std::fmax(worst_exp, rel_err(fast_exp(x), std::exp(static_cast<double>(x))));
  }
  for (float x = 1e-37f; x < 1e37f; x *= 1.0173f) {
    worst_log = std::fmax(worst_log, std::fabs(fast_log(x) - std::log(static_cast<double>(x))) /
                                         std::fmax(1.0, std::fabs(std::log(static_cast<double>(x)))));
  }
  CHECK(worst_exp < 4e-7, "exp relative error %g", worst_exp);
  CHECK(worst_log < 4e-7, "log error %g", worst_log);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(fast_exp(100.0f) == inf, "exp overflow");
  CHECK(fast_exp(-200.0f) == 0.0f, "exp underflow");
  // Subnormal results: within one subnormal step of the correctly rounded value.
  for (float x = -103.0f; x < -87.5f; x += 0.25f) {
    const float want = static_cast<float>(std::exp(static_cast<double>(x)));
    CHECK(std::fabs(fast_exp(x) - want) <= std::fmax(1.5e-45f, 1e-6f * want), "exp subnormal at %g", x);
  }
  CHECK(std::isnan(fast_exp(nan)), "exp nan");
  CHECK(fast_log(0.0f) == -inf, "log 0");
  CHECK(std::isnan(fast_log(-1.0f)), "log negative");
  CHECK(fast_log(inf) == inf, "log inf");
  CHECK(std::isnan(fast_log(nan)), "log nan");
  CHECK(rel_err(fast_log(1e-40f), std::log(1e-40)) < 1e-5, "log subnormal %g", fast_log(1e-40f));
}

static void test_std_terms() {
  // softplus(x - 5) against the C library in double, including the deep-negative branch.
  for (float s = -300.0f; s <= 60.0f; s += 0.37f) {
    StdTerms<float> t = std_terms<kSoftplus>(s, -5.0f);
    double x = static_cast<double>(s + -5.0f);  // the kernels add the shift in float, too
    double sp = x > 20 ? x : std::log1p(std::exp(x));
    double log_sp = x < -700 ? x : std::log(sp);
    CHECK(rel_err(t.std, sp) < 2e-6 || std::fabs(t.std - sp) < 1e-38, "softplus(%g) = %g vs %g", x, t.std, sp);
    CHECK(std::fabs(t.log_std - log_sp) < 2e-6 * std::fmax(1.0, std::fabs(log_sp)), "log softplus(%g)", x);
    CHECK(std::isfinite(t.log_std) && std::isfinite(t.dlog_std), "finite at %g", x);
  }
  StdTerms<float> deep = std_terms<kSoftplus>(-200.0f, -5.0f);
  CHECK(deep.log_std == -205.0f && deep.dlog_std == 1.0f, "deep negative softplus");
  StdTerms<float> lv = std_terms<kLogVar>(2.0f, 0.0f);
  CHECK(rel_err(lv.std, std::exp(1.0)) < 1e-6 && lv.log_std == 1.0f, "logvar");
  StdTerms<double> sd = std_terms<kStd>(0.5, 0.0);
  CHECK(sd.std == 0.5 && rel_err(sd.log_std, std::log(0.5)) < 1e-15 && sd.dlog_std == 2.0, "std");
  CHECK(kl_element(0.0f, std_terms<kStd>(1.0f, 0.0f)) == 0.0f, "KL(N(0,1)||N(0,1)) = 0");
}

static void test_philox() {
  Philox4 a = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(a.r0 == 0x6627e8d5u && a.r1 == 0xe169c58du && a.r2 == 0xbc57ac4cu && a.r3 == 0x9b00dbd8u, "KAT zero");
  const uint32_t f = 0xffffffffu;
  Philox4 b = philox4x32_10(f, f, f, f, f, f);
  CHECK(b.r0 == 0x408f276du && b.r1 == 0x41c83b0eu && b.r2 == 0xa20bc7c6u && b.r3 == 0x6d5451fdu, "KAT ones");
  CHECK(uniform_from_bits(0u) == 5.9604644775390625e-08f && uniform_from_bits(f) == 1.0f, "uniform range");
  // normal_at agrees with the block's Box-Muller pairs, element by element.
  for (uint64_t i = 0; i < 64; ++i) {
    Philox4 r = philox_block(i >> 2, 42, 7);
    Normal2 p = (i & 2) ? box_muller(r.r2, r.r3) : box_muller(r.r0, r.r1);
    CHECK(normal_at(i, 42, 7) == ((i & 1) ? p.b : p.a), "normal_at(%llu)", static_cast<unsigned long long>(i));
    // normal_block (one thread per block, the CUDA kernels) gives the same numbers.
    CHECK(normal_block(i >> 2, 42, 7).n[i & 3] == normal_at(i, 42, 7), "normal_block(%llu)",
          static_cast<unsigned long long>(i >> 2));
  }
  // sincos in turns against the C library.
  double worst = 0;
  for (float t = 0.0f; t <= 1.0f; t += 1.0f / 4099) {
    SinCos sc = sincos_turns(t);
    worst = std::fmax(worst, std::fabs(sc.sin - std::sin(2 * M_PI * t)));
    worst = std::fmax(worst, std::fabs(sc.cos - std::cos(2 * M_PI * t)));
  }
  CHECK(worst < 3e-7, "sincos error %g", worst);
  // Moments of many normals.
  double sum = 0, sum2 = 0;
  const int n = 1 << 20;
  for (int i = 0; i < n; ++i) {
    double v = normal_at(static_cast<uint64_t>(i), 1234, 99);
    sum += v;
    sum2 += v * v;
  }
  CHECK(std::fabs(sum / n) < 5 / std::sqrt(double(n)), "mean %g", sum / n);
  CHECK(std::fabs(sum2 / n - 1) < 5 * std::sqrt(2.0 / n), "variance %g", sum2 / n);
}

// The CPU kernels' vectorized Philox equals the scalar one, also where the 64-bit block
// index carries into its high word and for counts that are not whole vector groups.
static void test_philox_blocks() {
  constexpr int64_t kMax = cpu::philox_buffer_size(77);
  uint32_t r0[kMax], r1[kMax], r2[kMax], r3[kMax];
  const uint64_t firsts[] = {0, 5, 0xffffffffull - 20, 0x123456789abcdefull};
  for (uint64_t first : firsts) {
    cpu::philox_blocks(first, 77, 0x0123456789abcdefull, 0xfedcba9876543210ull, r0, r1, r2, r3);
    for (int64_t b = 0; b < 77; ++b) {
      const Philox4 want = philox_block(first + b, 0x0123456789abcdefull, 0xfedcba9876543210ull);
      CHECK(r0[b] == want.r0 && r1[b] == want.r1 && r2[b] == want.r2 && r3[b] == want.r3,
            "philox_blocks(first=%llu) block %lld", static_cast<unsigned long long>(first), static_cast<long long>(b));
    }
  }
}

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
// |a - b| in units in the last place of b (NaN only against NaN, infinities only equal).
static double ulps(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : 1e30;
  if (std::isinf(a) || std::isinf(b)) return a == b ? 0 : 1e30;
  const double step = std::fmax(std::fabs(std::nextafter(b, INFINITY) - b), 1.4e-45);
  return std::fabs(static_cast<double>(a) - b) / step;
}

// The largest ulp distance between a vector function and its scalar twin over x[0..n) (n a
// multiple of the vector width).
using S = cpu::Simd;
template <typename Vector, typename Scalar>
static double worst_ulps(const float* x, int n, Vector vector_fn, Scalar scalar_fn) {
  double worst = 0;
  for (int i = 0; i < n; i += S::kN) {
    float got[S::kN];
    S::store(got, S::tail(0, S::kN), vector_fn(S::load(x + i, S::tail(0, S::kN))));
    for (int l = 0; l < S::kN; ++l) worst = std::fmax(worst, ulps(got[l], scalar_fn(x[i + l])));
  }
  return worst;
}

// std_terms_ps<P> against std_terms<P> lane by lane: std, log std (forward), d std and
// d log std (backward) within 2 ulp.
template <int64_t P>
static void check_std_terms(const char* name, const float* x, int n, float shift) {
  const char* terms[4] = {"std", "log_std", "dstd", "dlog_std"};
  double worst[4] = {0, 0, 0, 0};
  float at[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; i += S::kN) {
    const S::Tail all = S::tail(0, S::kN);
    const auto f = cpu::simd::std_terms_ps<P, true>(S::load(x + i, all), shift);
    const auto b = cpu::simd::std_terms_ps<P, false>(S::load(x + i, all), shift);
    float got[4][S::kN];
    S::store(got[0], all, f.std), S::store(got[1], all, f.log_std);
    S::store(got[2], all, b.dstd), S::store(got[3], all, b.dlog_std);
    for (int l = 0; l < S::kN; ++l) {
      const StdTerms<float> t = std_terms<P>(x[i + l], shift);
      const float want[4] = {t.std, t.log_std, t.dstd, t.dlog_std};
      for (int k = 0; k < 4; ++k) {
        const double u = ulps(got[k][l], want[k]);
        if (u > worst[k]) worst[k] = u, at[k] = x[i + l];
      }
    }
  }
  for (int k = 0; k < 4; ++k) CHECK(worst[k] <= 2, "simd %s %s: %g ulp at %g", name, terms[k], worst[k], at[k]);
}

// The SIMD functions agree with math.h's scalar ones to 1 ulp (the same reductions and
// polynomials; only the fusing of multiply-adds may differ), special values included.
static void test_simd_math() {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr int kN = 16 * 4096;
  static float x[kN];
  // exp: the whole finite range, past both ends, subnormal results, NaN.
  for (int i = 0; i < kN - 16; ++i) x[i] = -110.0f + 200.0f * i / (kN - 16);
  const float exp_special[16] = {inf, -inf, nan, 0.0f, -0.0f, 88.7f, 88.73f, -103.9f, -104.0f, -87.4f,
                                 -95.5f, 1e-30f, -1e-30f, 1.0f, -1.0f, 89.0f};
  for (int i = 0; i < 16; ++i) x[kN - 16 + i] = exp_special[i];
  double worst = worst_ulps(x, kN, [](S::V v) { return cpu::simd::exp_ps(v); },
                            [](float v) { return fast_exp(v); });
  CHECK(worst <= 1, "simd exp: %g ulp from fast_exp", worst);
  // log: positive normals and subnormals over the whole range, +inf, NaN.
  for (int i = 0; i < kN - 16; ++i) x[i] = std::ldexp(1.0f + (i % 977) / 977.0f, -149 + (i * 277) % 277);
  const float log_special[16] = {inf, nan, 1.0f, 2.0f, 0.5f, 1.4142135f, 1.4142137f, 0.70710677f,
                                 1e-45f, 1.17549435e-38f, 3.4e38f, 1e-40f, 1.0000001f, 0.99999994f, 7.0f, 1e10f};
  for (int i = 0; i < 16; ++i) x[kN - 16 + i] = log_special[i];
  worst = worst_ulps(x, kN, [](S::V v) { return cpu::simd::log_ps<cpu::simd::kPositiveOrInf>(v); },
                     [](float v) { return fast_log(v); });
  CHECK(worst <= 1, "simd log: %g ulp from fast_log", worst);
  // log1p_unit on [0, 1].
  for (int i = 0; i < kN; ++i) x[i] = static_cast<float>(i) / (kN - 1);
  worst = worst_ulps(x, kN, [](S::V v) { return cpu::simd::log1p_unit_ps(v); },
                     [](float v) { return log1p_unit(v); });
  CHECK(worst <= 1, "simd log1p_unit: %g ulp", worst);
  // std terms of every parameterization across their branches, infinities and NaN (softplus:
  // deep, ordinary and linear; std: zero and negatives too).
  for (int i = 0; i < kN - 16; ++i) x[i] = -300.0f + 400.0f * i / (kN - 16);
  const float specials[16] = {inf, -inf, nan, 0.0f, -0.0f, 20.0f, 20.000002f, -20.0f, -20.000002f,
                              -88.0f, -104.0f, 1e-8f, -1e-8f, 3e38f, -3e38f, 1e-40f};
  for (int i = 0; i < 16; ++i) x[kN - 16 + i] = specials[i];
  check_std_terms<kSoftplus>("softplus", x, kN, 0.0f);
  check_std_terms<kSoftplus>("softplus shifted", x, kN, -5.0f);
  check_std_terms<kLogVar>("logvar", x, kN, 0.0f);
  check_std_terms<kStd>("std", x, kN, 0.0f);
  // Box-Muller in element order: normals_from_blocks against normal_at for 64 blocks.
  constexpr int64_t kBlocks = 64;
  uint32_t r0[kBlocks], r1[kBlocks], r2[kBlocks], r3[kBlocks];
  float normals[4 * kBlocks];
  cpu::philox_blocks(1000, kBlocks, 42, 7, r0, r1, r2, r3);
  cpu::simd::normals_from_blocks(r0, r1, r2, r3, kBlocks, normals);
  worst = 0;
  for (int64_t i = 0; i < 4 * kBlocks; ++i) worst = std::fmax(worst, ulps(normals[i], normal_at(4000 + i, 42, 7)));
  CHECK(worst <= 4, "simd Box-Muller: %g ulp from normal_at", worst);
}
#endif

int main() {
  test_exp_log();
  test_std_terms();
  test_philox();
  test_philox_blocks();
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
  test_simd_math();
#endif
  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("all C++ math tests passed (level %d)\n", MIBCORE_ISA_LEVEL);
  return 0;
}
