// What the cuda-emu cases share (run_cases.cpp): the storage formats, a seeded generator, guarded
// output buffers, the comparison with its tolerances, the pointer layouts and grid caps, the rng.
// Included by run_cases.cpp only (one translation unit: an anonymous namespace is fine here).
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "dropout_kernels.h"

using mibcore::cuda::DType;

namespace {

// ---------------------------------------------------------------- storage types
// The storage types: name, unit roundoff, smallest subnormal, and the accumulation type's roundoff.
template <DType D, int kUnitBits, int kTinyBits, int kAccBits>
struct Format {
  static constexpr DType dtype = D;
  static constexpr const char* name = D == DType::kFloat32 ? "fp32" : D == DType::kFloat64 ? "fp64"
                                      : D == DType::kFloat16 ? "fp16" : "bf16";
  static constexpr double unit = std::ldexp(1.0, -kUnitBits), tiny = std::ldexp(1.0, -kTinyBits);
  static constexpr double acc_unit = std::ldexp(1.0, -kAccBits);
};
template <typename T> struct Store;
template <> struct Store<float> : Format<DType::kFloat32, 24, 149, 24> {
  static double get(float v) { return v; }
  static float put(double v) { return static_cast<float>(v); }
};
template <> struct Store<double> : Format<DType::kFloat64, 53, 1074, 53> {
  static double get(double v) { return v; }
  static double put(double v) { return v; }
};
template <> struct Store<__half> : Format<DType::kFloat16, 11, 24, 24> {
  static double get(__half v) { return __half2float(v); }
  static __half put(double v) { return __float2half_rn(static_cast<float>(v)); }
};
template <> struct Store<__nv_bfloat16> : Format<DType::kBFloat16, 8, 133, 24> {
  static double get(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __nv_bfloat16 put(double v) { return __float2bfloat16_rn(static_cast<float>(v)); }
};

struct Rng {  // splitmix64
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * static_cast<double>(next() >> 11) * 0x1p-53; }
};

// A device buffer: `pre` guard elements, n data elements, `post` guard elements, the base
// 64-byte aligned (so pre decides the data pointer's alignment). pre = post = 0: the data ends at
// the allocation's end, where ASan's redzone starts.
constexpr double kSentinel = -768.0;  // exact in every dtype; never an expected value here
constexpr double kGuard = 1536.0;

template <typename T>
struct Buffer {
  T* base = nullptr;
  T* data = nullptr;
  size_t n = 0, pre = 0, post = 0;
  Buffer(size_t n_, size_t pre_, size_t post_) : n(n_), pre(pre_), post(post_) {
    void* p = nullptr;
    if (posix_memalign(&p, 64, std::max<size_t>(1, (pre + n + post) * sizeof(T))) != 0) std::abort();
    base = static_cast<T*>(p);
    data = base + pre;
    for (size_t i = 0; i < pre + n + post; ++i) base[i] = Store<T>::put(i >= pre && i < pre + n ? kSentinel : kGuard);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(base); }
  double get(size_t i) const { return Store<T>::get(data[i]); }
  bool guards_intact() const {
    for (size_t i = 0; i < pre; ++i) if (Store<T>::get(base[i]) != kGuard) return false;
    for (size_t i = 0; i < post; ++i) if (Store<T>::get(data[n + i]) != kGuard) return false;
    return true;
  }
};

// ---------------------------------------------------------------- comparison
struct Check {
  std::string name;
  long compared = 0, mismatches = 0;
  explicit Check(std::string n) : name(std::move(n)) {}
  void fail(const char* what, size_t i, double got, double want, double tol) {
    if (mismatches++ < 4) {
      std::printf("MISMATCH %s: %s[%zu] = %.9g, expected %.9g (tolerance %.3g)\n", name.c_str(), what, i, got, want, tol);
    }
  }
  // |got - want| <= tol, NaN only where NaN is expected, infinities exact.
  void near(const char* what, size_t i, double got, double want, double tol) {
    ++compared;
    const bool ok = std::isnan(want) ? std::isnan(got)
                    : std::isinf(want) ? got == want
                                       : std::isfinite(got) && std::fabs(got - want) <= tol;
    if (!ok) fail(what, i, got, want, tol);
  }
  template <typename T>
  void guards(const char* what, const Buffer<T>& b) {
    ++compared;
    if (!b.guards_intact()) fail(what, 0, NAN, kGuard, 0);  // a write outside the tensor
  }
  void status(const char* what, cudaError_t s) {
    ++compared;
    if (s != cudaSuccess) {
      ++mismatches;
      std::printf("MISMATCH %s: %s returned %s\n", name.c_str(), what, cudaGetErrorString(s));
    }
  }
};

// The tolerance of a result of magnitude |want| computed in the accumulation type from terms
// whose magnitudes sum to `mag` through `depth` roundings, then stored in T.
template <typename T>
double tolerance(double want, double mag, double depth) {
  return depth * Store<T>::acc_unit * mag + Store<T>::unit * std::fabs(want) + Store<T>::tiny;
}

// Where the emulated device and the data layout of a case come from.
struct Layout {
  int sms = 132;          // the SM count grid_for reads (1: the smallest real grid)
  unsigned max_grid = 0;  // nonzero: gridDim.x capped (the grid-stride loops take the rest)
  size_t pre = 0, post = 0;  // guard elements before/after each tensor (pre = 1: misaligned)
  size_t pre_out = 0;        // the same for the outputs only (mixed alignment)
  const char* name = "aligned";
};

void configure(const Layout& l) {
  emu::config.sms = l.sms;
  emu::config.max_grid = l.max_grid;
}

const int64_t kRng[2] = {0x1234abcd5678ef01ll, 0x0000000300000007ll};  // (seed, offset)
uint64_t seed() { return static_cast<uint64_t>(kRng[0]); }
uint64_t offset() { return static_cast<uint64_t>(kRng[1]); }

template <typename T>
void fill(Buffer<T>& b, Rng& r, double lo, double hi) {
  for (size_t i = 0; i < b.n; ++i) b.data[i] = Store<T>::put(r.uniform(lo, hi));
}

}  // namespace
