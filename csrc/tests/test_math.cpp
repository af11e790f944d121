// C++ unit tests of csrc/include: the float exp/log polynomials against the C library,
// special values, the softplus-family terms, Philox4x32-10 known-answer vectors, and the CPU
// kernels' vectorized Philox (csrc/cpu/philox_cpu.h) against the scalar one.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "mibcore/philox.h"
#include "philox_cpu.h"  // csrc/cpu

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

int main() {
  test_exp_log();
  test_std_terms();
  test_philox();
  test_philox_blocks();
  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("all C++ math tests passed\n");
  return 0;
}
