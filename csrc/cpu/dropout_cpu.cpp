// CPU kernels of the dropout operators: dropout, dropout_add, relu_dropout and
// relu_dropout_backward on the Philox contract (philox.h, DESIGN.md section 5).
//
// The flat index range is cut into tiles of kTile elements, handed to at::parallel_for (OpenMP)
// in tasks of kGrainTiles tiles. Tiles start at multiples of kTile (a multiple of 64), so no
// Philox block is split between threads and the results do not depend on the thread count.
// Per tile, the vector Philox of philox_cpu.h makes all the tile's blocks in one call; with
// AVX-512 the keep-decisions become bits (dropout_keep_bits) that mask a splat of 1 / (1 - p),
// and fp16 / bf16 are converted in registers (avx512_convert_cpu.h). Dropped elements are
// x * 0, not a select, so that inf and NaN inputs give NaN there, as torch's F.dropout does.
#ifndef MIBCORE_ISA  // the first inclusion: what every level uses, compiled for the baseline
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>

#include "mibcore/dropout_host.h"
#include "mibcore/philox.h"

#define MIBCORE_ISA_FILE "dropout_cpu.cpp"
#include "isa_foreach.h"  // this file again, once per level

TORCH_LIBRARY_IMPL(mibcore, CPU, m) {
  m.impl("dropout", MIBCORE_CPU_KERNEL(dropout_cpu));
  m.impl("dropout_add", MIBCORE_CPU_KERNEL(dropout_add_cpu));
  m.impl("relu_dropout", MIBCORE_CPU_KERNEL(relu_dropout_cpu));
  m.impl("relu_dropout_backward", MIBCORE_CPU_KERNEL(relu_dropout_backward_cpu));
}

#else  // one pass per level (isa_foreach.h)
#include "philox_cpu.h"  // (and simd_cpu.h, avx512_convert_cpu.h)

namespace mibcore {
namespace MIBCORE_ISA {
namespace {

constexpr int64_t kTile = 2048;     // elements per tile: whole 64-bit words of keep-bits
constexpr int64_t kGrainTiles = 8;  // tiles per parallel task, at least (16K elements)

enum class Op { kDropout, kAdd, kRelu };  // y = dropout(b), a + dropout(b), dropout(relu(b))

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512

// One AVX-512 vector of compute values per storage type: 16 fp32 lanes for fp32, fp16 and
// bf16; 8 fp64 lanes for fp64.
template <typename scalar_t>
struct Lanes {
  using V = __m512;
  using M = __mmask16;
  static constexpr int64_t kN = 16;
  static V load(const scalar_t* p, M m) { return cpu::avx512::load16(p, m); }
  static void store(scalar_t* p, M m, V v) { cpu::avx512::store16(p, m, v); }
  static V scale(M keep, float inv) { return _mm512_maskz_mov_ps(keep, _mm512_set1_ps(inv)); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  // vmaxps returns its second operand when one is NaN: relu(NaN) = NaN.
  static V relu(V x) { return _mm512_max_ps(_mm512_setzero_ps(), x); }
  static M positive(V x) { return _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ); }
  static M tail(int64_t j, int64_t n) { return cpu::avx512::tail_mask(j, n); }
};

template <>
struct Lanes<double> {
  using V = __m512d;
  using M = __mmask8;
  static constexpr int64_t kN = 8;
  static V load(const double* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(double* p, M m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static V scale(M keep, double inv) { return _mm512_maskz_mov_pd(keep, _mm512_set1_pd(inv)); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V relu(V x) { return _mm512_max_pd(_mm512_setzero_pd(), x); }
  static M positive(V x) { return _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_GT_OQ); }
  static M tail(int64_t j, int64_t n) { return j + 8 <= n ? M(0xff) : M((1u << (n - j)) - 1); }
};

// The n elements of one tile; bit j of the keep-bits is element j.
template <Op kOp, typename scalar_t, typename acc_t>
void apply_tile(const scalar_t* a, const scalar_t* b, scalar_t* y, int64_t n, const uint64_t* bits, acc_t inv) {
  using L = Lanes<scalar_t>;
  for (int64_t j = 0; j < n; j += L::kN) {
    const typename L::M m = L::tail(j, n);
    const auto s = L::scale(static_cast<typename L::M>(bits[j / 64] >> (j % 64)), inv);
    const auto v = L::load(b + j, m);
    if constexpr (kOp == Op::kDropout) L::store(y + j, m, L::mul(v, s));
    if constexpr (kOp == Op::kRelu) L::store(y + j, m, L::mul(L::relu(v), s));
    if constexpr (kOp == Op::kAdd) L::store(y + j, m, L::fma(v, s, L::load(a + j, m)));
  }
}
#else
#if MIBCORE_ISA_LEVEL == MIBCORE_ISA_AVX2
// fp32, fp16 and bf16 at AVX2: the tile's Philox words become the scales of 32 elements at a
// time in registers (KeepScales), with no scale array in between (that pass and its copy cost
// as much as half the Philox rounds here). n <= kTile; the words of a partial group are made.
template <Op kOp, typename scalar_t>
void apply_tile_words(const scalar_t* a, const scalar_t* b, scalar_t* y, int64_t n, const uint32_t* const r[4],
                      const cpu::KeepScales& keep) {
  using S = cpu::SimdYmm;
  for (int64_t j = 0; j < n; j += 32) {
    S::V s[4];
    keep.scales32(r[0], r[1], r[2], r[3], j / 4, s);
    for (int q = 0; q < 4 && j + 8 * q < n; ++q) {
      const int64_t at = j + 8 * q;
      const S::Tail m = S::tail(at, n);
      S::V v = S::load(b + at, m);
      if constexpr (kOp == Op::kRelu) v = S::max(S::zero(), v);  // vmaxps: relu(NaN) = NaN
      S::store(y + at, m, kOp == Op::kAdd ? S::fmadd(v, s[q], S::load(a + at, m)) : S::mul(v, s[q]));
    }
  }
}
#endif
// Without AVX-512 (and for fp64 at AVX2): `kept` holds 1 or 0 per element (fill_dropout_scale
// with scale 1).
template <Op kOp, typename scalar_t, typename acc_t>
void apply_tile(const scalar_t* a, const scalar_t* b, scalar_t* y, int64_t n, const float* kept, acc_t inv) {
#pragma GCC ivdep
  for (int64_t j = 0; j < n; ++j) {
    const acc_t s = static_cast<acc_t>(kept[j]) * inv;
    acc_t v = static_cast<acc_t>(b[j]);
    if constexpr (kOp == Op::kRelu) v = v < acc_t(0) ? acc_t(0) : v;  // NaN stays NaN
    if constexpr (kOp == Op::kAdd) {
      y[j] = static_cast<scalar_t>(std::fma(v, s, static_cast<acc_t>(a[j])));
    } else {
      y[j] = static_cast<scalar_t>(v * s);
    }
  }
}
#endif

// y = kOp(a, dropout(b)) over `numel` contiguous elements (a only for kAdd).
template <Op kOp, typename scalar_t>
void dropout_kernel(const scalar_t* a, const scalar_t* b, scalar_t* y, int64_t numel, const DropoutScale& d,
                    uint64_t seed, uint64_t offset) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t inv = std::is_same_v<scalar_t, double> ? static_cast<acc_t>(d.inv_keep_d) : d.inv_keep_f;
  const int64_t tiles = (numel + kTile - 1) / kTile;
#if MIBCORE_ISA_LEVEL == MIBCORE_ISA_AVX2
  if constexpr (!std::is_same_v<scalar_t, double>) {
    const cpu::KeepScales keep(d.keep_prob, d.inv_keep_f);
    at::parallel_for(0, tiles, kGrainTiles, [&](int64_t t_begin, int64_t t_end) {
      constexpr int64_t kStride = cpu::philox_buffer_size(kTile / 4);
      alignas(64) uint32_t words[4 * kStride];
      const uint32_t* const r[4] = {words, words + kStride, words + 2 * kStride, words + 3 * kStride};
      for (int64_t t = t_begin; t < t_end; ++t) {
        const int64_t first = t * kTile;
        const int64_t n = std::min(kTile, numel - first);
        cpu::philox_blocks(static_cast<uint64_t>(first) / 4, (n + 3) / 4, seed, offset, words, words + kStride,
                           words + 2 * kStride, words + 3 * kStride);
        apply_tile_words<kOp>(a == nullptr ? nullptr : a + first, b + first, y + first, n, r, keep);
      }
    });
    return;
  }
#endif
  at::parallel_for(0, tiles, kGrainTiles, [&](int64_t t_begin, int64_t t_end) {
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
    alignas(64) uint32_t scratch[cpu::keep_bits_scratch_size(kTile)];
    alignas(64) uint64_t kept[kTile / 64];
#else
    alignas(64) uint32_t scratch[cpu::dropout_scratch_size(kTile)];
    alignas(64) float kept[kTile];
#endif
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t first = t * kTile;
      const int64_t n = std::min(kTile, numel - first);
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
      cpu::dropout_keep_bits(static_cast<uint64_t>(first), n, seed, offset, d.keep_prob, kept, scratch);
#else
      cpu::fill_dropout_scale(static_cast<uint64_t>(first), n, seed, offset, d.keep_prob, 1.0f, kept, scratch);
#endif
      apply_tile<kOp>(a == nullptr ? nullptr : a + first, b + first, y + first, n, kept, inv);
    }
  });
}

// out = grad_y * (y > 0 ? 1 / (1 - p) : 0): y > 0 exactly where the element was kept and x > 0.
template <typename scalar_t>
void relu_dropout_backward_kernel(const scalar_t* g, const scalar_t* y, scalar_t* out, int64_t numel,
                                  const DropoutScale& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t inv = std::is_same_v<scalar_t, double> ? static_cast<acc_t>(d.inv_keep_d) : d.inv_keep_f;
  at::parallel_for(0, numel, kTile * kGrainTiles, [&](int64_t begin, int64_t end) {
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
    using L = Lanes<scalar_t>;
    for (int64_t j = begin; j < end; j += L::kN) {
      const typename L::M m = L::tail(j, end);
      L::store(out + j, m, L::mul(L::load(g + j, m), L::scale(L::positive(L::load(y + j, m)), inv)));
    }
#else
#pragma GCC ivdep
    for (int64_t j = begin; j < end; ++j) {
      out[j] = static_cast<scalar_t>(static_cast<acc_t>(g[j]) * (static_cast<acc_t>(y[j]) > acc_t(0) ? inv : acc_t(0)));
    }
#endif
  });
}

std::pair<uint64_t, uint64_t> read_rng(const at::Tensor& rng) {
  const at::Tensor r = rng.contiguous();
  const int64_t* p = r.data_ptr<int64_t>();
  return {static_cast<uint64_t>(p[0]), static_cast<uint64_t>(p[1])};
}

// kOp(a, dropout(b)) for contiguous a, b (a undefined unless kAdd).
template <Op kOp>
at::Tensor run(const at::Tensor& a, const at::Tensor& b, double p, const at::Tensor& rng) {
  at::Tensor y = at::empty_like(b);
  if (b.numel() == 0) return y;
  const auto [seed, offset] = read_rng(rng);
  const DropoutScale d = dropout_scale(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "dropout_cpu", [&] {
    dropout_kernel<kOp, scalar_t>(a.defined() ? a.data_ptr<scalar_t>() : nullptr, b.data_ptr<scalar_t>(),
                                  y.data_ptr<scalar_t>(), b.numel(), d, seed, offset);
  });
  return y;
}

}  // namespace

at::Tensor dropout_cpu(const at::Tensor& x, double p, const at::Tensor& rng) {
  check_dropout_args("dropout", x, p, rng, at::kCPU);
  if (p == 0.0) return x.clone();
  return run<Op::kDropout>(at::Tensor(), x.contiguous(), p, rng);
}

at::Tensor dropout_add_cpu(const at::Tensor& x, const at::Tensor& h, double p, const at::Tensor& rng) {
  check_dropout_add_args(x, h, p, rng, at::kCPU);
  if (p == 0.0) return at::add(x, h);
  return run<Op::kAdd>(x.contiguous(), h.contiguous(), p, rng);
}

at::Tensor relu_dropout_cpu(const at::Tensor& x, double p, const at::Tensor& rng) {
  check_dropout_args("relu_dropout", x, p, rng, at::kCPU);
  if (p == 0.0) return at::relu(x);
  return run<Op::kRelu>(at::Tensor(), x.contiguous(), p, rng);
}

at::Tensor relu_dropout_backward_cpu(const at::Tensor& grad_y_in, const at::Tensor& y_in, double p) {
  check_relu_dropout_backward_args(grad_y_in, y_in, p, at::kCPU);
  const at::Tensor grad_y = grad_y_in.contiguous(), y = y_in.contiguous();
  at::Tensor out = at::empty_like(y);
  if (y.numel() == 0) return out;
  const DropoutScale d = dropout_scale(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "relu_dropout_backward_cpu", [&] {
    relu_dropout_backward_kernel<scalar_t>(grad_y.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                           out.data_ptr<scalar_t>(), y.numel(), d);
  });
  return out;
}

}  // namespace MIBCORE_ISA
}  // namespace mibcore
#endif  // MIBCORE_ISA
