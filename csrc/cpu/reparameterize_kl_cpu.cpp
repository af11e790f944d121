// CPU kernels of mibcore::reparameterize_kl: at::parallel_for over rows, and within a row
// tiles of kTile elements. fp32, fp16 and bf16 run the explicit SIMD code of
// reparameterize_kl_simd.h at the AVX2 and AVX-512 levels; fp64 and the baseline level run
// loops that g++ auto-vectorizes (the shared math in csrc/include is branch-free for that reason).
// `#pragma GCC ivdep` rather than `omp simd` for those element loops: omp simd privatizes the
// inlined callee's locals into per-lane arrays and the loop turns into gathers; the KL row sum
// is a separate small reduction.
#ifndef MIBCORE_ISA  // the first inclusion: what every level uses, compiled for the baseline
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <tuple>

#include "mibcore/philox.h"
#include "mibcore/reparameterize_kl_host.h"

#define MIBCORE_ISA_FILE "reparameterize_kl_cpu.cpp"
#include "isa_foreach.h"  // this file again, once per level

TORCH_LIBRARY_IMPL(mibcore, CPU, m) {
  m.impl("reparameterize_kl", MIBCORE_CPU_KERNEL(reparameterize_kl_cpu));
  m.impl("reparameterize_kl_backward", MIBCORE_CPU_KERNEL(reparameterize_kl_backward_cpu));
}

#else  // one pass per level (isa_foreach.h)
#include "philox_cpu.h"
#include "reparameterize_kl_simd.h"

namespace mibcore {
namespace MIBCORE_ISA {
namespace {

constexpr int64_t kTile = 512;                 // elements per inner tile, a multiple of 16 (Simd::kN)
constexpr int64_t kParallelGrain = 16384;      // elements per parallel task, at least

// eps[k] = the standard normal of flat element first + k, for k < n <= kTile: Philox, then
// Box-Muller in the SIMD code of reparameterize_kl_simd.h at the AVX2 and AVX-512 levels (for
// every dtype: eps is fp32), else in loops g++ vectorizes from philox.h.
void fill_normals(uint64_t first, int64_t n, uint64_t seed, uint64_t offset, float* eps) {
  constexpr int64_t kBlocks = cpu::philox_buffer_size(kTile / 4 + 1);  // whole vectors of blocks
  alignas(64) uint32_t r0[kBlocks], r1[kBlocks], r2[kBlocks], r3[kBlocks];
  alignas(64) float all[4 * kBlocks];
  const int64_t skip = static_cast<int64_t>(first & 3);
  const int64_t blocks = (skip + n + 3) / 4;
  cpu::philox_blocks(first >> 2, blocks, seed, offset, r0, r1, r2, r3);
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
  constexpr int64_t kN = cpu::Simd::kN;
  cpu::simd::normals_from_blocks(r0, r1, r2, r3, (blocks + kN - 1) / kN * kN, all);
#else
  alignas(64) float n0[kBlocks], n1[kBlocks], n2[kBlocks], n3[kBlocks];
#pragma GCC ivdep
  for (int64_t b = 0; b < blocks; ++b) {
    // (Writing each output directly; returning a 4-float struct here stops g++ vectorizing.)
    const Normal2 p = box_muller(r0[b], r1[b]);
    const Normal2 q = box_muller(r2[b], r3[b]);
    n0[b] = p.a;
    n1[b] = p.b;
    n2[b] = q.a;
    n3[b] = q.b;
  }
  for (int64_t b = 0; b < blocks; ++b) {
    all[4 * b] = n0[b];
    all[4 * b + 1] = n1[b];
    all[4 * b + 2] = n2[b];
    all[4 * b + 3] = n3[b];
  }
#endif
  std::copy(all + skip, all + skip + n, eps);
}

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
// forward_element for k < n (scalar_t float, half or bfloat16), Simd::kN lanes at a time;
// without kSample, z is left to the caller (a copy of mu).
template <int64_t P, bool kSample, typename scalar_t>
void forward_tile_simd(const scalar_t* mu, const scalar_t* scale, scalar_t* z, const float* eps, float* kl,
                       int64_t n, float shift) {
  using S = cpu::Simd;
  cpu::simd::StdTermsTile<kTile> t;
  cpu::simd::std_terms_tile<P, true>(scale, n, shift, t);
  const S::Tail all = S::tail(0, S::kN);
  for (int64_t j = 0; j < n; j += S::kN) {
    const S::Tail m = S::tail(j, n);
    const S::V mu_v = S::load(mu + j, m);
    const S::V std = S::load(t.std + j, all);
    if constexpr (kSample) S::store(z + j, m, S::fmadd(std, S::load(eps + j, m), mu_v));
    S::store(kl + j, m, kl_element_of<S>(mu_v, std, S::load(t.log_std + j, all)));  // the formula of math.h
  }
}

// backward_element for k < n (eps all 0 without sampling).
template <int64_t P, typename scalar_t>
void backward_tile_simd(const scalar_t* grad_z, const float* grad_kl, const scalar_t* mu, const scalar_t* scale,
                        scalar_t* grad_mu, scalar_t* grad_scale, const float* eps, int64_t n, float shift) {
  using S = cpu::Simd;
  cpu::simd::StdTermsTile<kTile> t;
  cpu::simd::std_terms_tile<P, false>(scale, n, shift, t);
  const S::Tail all = S::tail(0, S::kN);
  for (int64_t j = 0; j < n; j += S::kN) {
    const S::Tail m = S::tail(j, n);
    const S::V gz = S::load(grad_z + j, m);
    const S::V gk = S::load(grad_kl + j, m);
    const S::V dstd = S::load(t.dstd + j, all);
    S::store(grad_mu + j, m, S::fmadd(gk, S::load(mu + j, m), gz));
    const S::V kl_dscale = kl_element_dscale_of<S>(S::load(t.std + j, all), dstd, S::load(t.dlog_std + j, all));
    const S::V g = S::mul(S::mul(gz, S::load(eps + j, m)), dstd);
    S::store(grad_scale + j, m, S::fmadd(gk, kl_dscale, g));
  }
}
#endif

// The explicit SIMD tiles serve fp32, fp16 and bf16 (fp64 keeps the double-precision scalar math).
template <typename scalar_t>
constexpr bool kSimdTiles =
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
    std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;
#else
    false;
#endif

template <int64_t P, bool kSample, typename scalar_t, typename acc_t>
MIB_CPU_INLINE acc_t forward_element(const scalar_t* mu, const scalar_t* scale, scalar_t* z,
                                        const float* eps, int64_t j, acc_t shift) {
  const acc_t m = static_cast<acc_t>(mu[j]);
  const StdTerms<acc_t> t = std_terms<P>(static_cast<acc_t>(scale[j]), shift);
  if constexpr (kSample) {
    z[j] = static_cast<scalar_t>(m + t.std * static_cast<acc_t>(eps[j]));
  } else {
    z[j] = mu[j];  // exactly mu (std may be inf, and inf * 0 is NaN)
  }
  return kl_element(m, t);
}

// z and the per-element KL of the n elements from flat index `first` (eps: scratch).
template <int64_t P, typename scalar_t, typename acc_t>
MIB_CPU_INLINE void forward_elements(const scalar_t* mu, const scalar_t* scale, scalar_t* z, acc_t* kl, float* eps,
                                        uint64_t first, int64_t n, acc_t shift, bool sample, uint64_t seed,
                                        uint64_t offset) {
  if (sample) fill_normals(first, n, seed, offset, eps);
  if constexpr (kSimdTiles<scalar_t>) {
    if (sample) {
      forward_tile_simd<P, true>(mu, scale, z, eps, kl, n, shift);
    } else {
      std::copy(mu, mu + n, z);  // exactly mu (std may be inf, and inf * 0 is NaN)
      forward_tile_simd<P, false>(mu, scale, z, eps, kl, n, shift);
    }
    return;
  }
  if (sample) {
#pragma GCC ivdep
    for (int64_t j = 0; j < n; ++j) kl[j] = forward_element<P, true>(mu, scale, z, eps, j, shift);
  } else {
#pragma GCC ivdep
    for (int64_t j = 0; j < n; ++j) kl[j] = forward_element<P, false>(mu, scale, z, eps, j, shift);
  }
}

template <int64_t P, typename scalar_t, typename acc_t>
MIB_CPU_INLINE void backward_element(const scalar_t* grad_z, const acc_t* grad_kl, const scalar_t* mu,
                                        const scalar_t* scale, scalar_t* grad_mu, scalar_t* grad_scale,
                                        const float* eps, int64_t j, acc_t shift) {
  const acc_t m = static_cast<acc_t>(mu[j]);
  const acc_t gz = static_cast<acc_t>(grad_z[j]);
  const acc_t gk = grad_kl[j];
  const StdTerms<acc_t> t = std_terms<P>(static_cast<acc_t>(scale[j]), shift);
  grad_mu[j] = static_cast<scalar_t>(gz + gk * m);
  grad_scale[j] = static_cast<scalar_t>(gz * static_cast<acc_t>(eps[j]) * t.dstd + gk * kl_element_dscale(t));
}

// grad_mu and grad_scale of the n elements from flat index `first` (eps: scratch).
template <int64_t P, typename scalar_t, typename acc_t>
MIB_CPU_INLINE void backward_elements(const scalar_t* grad_z, const acc_t* grad_kl, const scalar_t* mu,
                                         const scalar_t* scale, scalar_t* grad_mu, scalar_t* grad_scale, float* eps,
                                         uint64_t first, int64_t n, acc_t shift, bool sample, uint64_t seed,
                                         uint64_t offset) {
  if (sample) {
    fill_normals(first, n, seed, offset, eps);
  } else {
    std::fill(eps, eps + n, 0.0f);
  }
  if constexpr (kSimdTiles<scalar_t>) {
    backward_tile_simd<P>(grad_z, grad_kl, mu, scale, grad_mu, grad_scale, eps, n, shift);
    return;
  }
#pragma GCC ivdep
  for (int64_t j = 0; j < n; ++j) backward_element<P>(grad_z, grad_kl, mu, scale, grad_mu, grad_scale, eps, j, shift);
}

int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)); }

// Tiles are flat ranges of kTile elements that may span several (short) rows, so that the
// vectorized loops run full-width at the paper's 50-wide rows too. Each parallel task owns
// whole rows, so a row's KL sum is never shared between threads. For each row segment
// [begin, end) of the tile at flat index `first`, calls fn(row, begin, end).
template <typename Fn>
MIB_CPU_INLINE void for_each_row_segment(int64_t first, int64_t n, int64_t cols, Fn&& fn) {
  for (int64_t j = 0; j < n;) {
    const int64_t row = (first + j) / cols;
    const int64_t end = std::min(n, (row + 1) * cols - first);
    fn(row, j, end);
    j = end;
  }
}

template <int64_t P, typename scalar_t, typename acc_t>
void forward_kernel(const scalar_t* mu, const scalar_t* scale, scalar_t* z, acc_t* kl, int64_t rows,
                    int64_t cols, acc_t shift, bool sample, uint64_t seed, uint64_t offset) {
  if (cols == 0) {
    std::fill(kl, kl + rows, acc_t(0));
    return;
  }
  at::parallel_for(0, rows, rows_per_task(cols), [&](int64_t r_begin, int64_t r_end) {
    alignas(64) float eps[kTile];
    alignas(64) acc_t kl_tile[kTile];
    std::fill(kl + r_begin, kl + r_end, acc_t(0));
    const int64_t last = r_end * cols;
    for (int64_t first = r_begin * cols; first < last; first += kTile) {
      const int64_t n = std::min(kTile, last - first);
      forward_elements<P>(mu + first, scale + first, z + first, kl_tile, eps, static_cast<uint64_t>(first), n, shift,
                          sample, seed, offset);
      for_each_row_segment(first, n, cols, [&](int64_t row, int64_t begin, int64_t end) {
        acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = begin; j < end; ++j) sum += kl_tile[j];
        kl[row] += sum;
      });
    }
  });
}

template <int64_t P, typename scalar_t, typename acc_t>
void backward_kernel(const scalar_t* grad_z, const acc_t* grad_kl, const scalar_t* mu,
                     const scalar_t* scale, scalar_t* grad_mu, scalar_t* grad_scale, int64_t rows,
                     int64_t cols, acc_t shift, bool sample, uint64_t seed, uint64_t offset) {
  if (cols == 0) return;
  at::parallel_for(0, rows, rows_per_task(cols), [&](int64_t r_begin, int64_t r_end) {
    alignas(64) float eps[kTile];
    alignas(64) acc_t grad_kl_tile[kTile];
    const int64_t last = r_end * cols;
    for (int64_t first = r_begin * cols; first < last; first += kTile) {
      const int64_t n = std::min(kTile, last - first);
      for_each_row_segment(first, n, cols, [&](int64_t row, int64_t begin, int64_t end) {
        std::fill(grad_kl_tile + begin, grad_kl_tile + end, grad_kl[row]);
      });
      backward_elements<P>(grad_z + first, grad_kl_tile, mu + first, scale + first, grad_mu + first,
                           grad_scale + first, eps, static_cast<uint64_t>(first), n, shift, sample, seed, offset);
    }
  });
}

// Calls fn.template operator()<P>() for the runtime parameterization.
template <typename Fn>
void dispatch_parameterization(int64_t parameterization, Fn&& fn) {
  switch (parameterization) {
    case kSoftplus: fn(std::integral_constant<int64_t, kSoftplus>{}); break;
    case kLogVar: fn(std::integral_constant<int64_t, kLogVar>{}); break;
    default: fn(std::integral_constant<int64_t, kStd>{}); break;
  }
}

std::pair<uint64_t, uint64_t> read_rng(const at::Tensor& rng) {
  // (rng is on mu's device, a CPU one: check_reparameterize_kl_args)
  const at::Tensor r = rng.contiguous();
  const int64_t* p = r.data_ptr<int64_t>();
  return {static_cast<uint64_t>(p[0]), static_cast<uint64_t>(p[1])};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_cpu(const at::Tensor& mu_in,
                                                         const at::Tensor& scale_in,
                                                         const at::Tensor& rng,
                                                         int64_t parameterization, double shift,
                                                         bool sample) {
  check_reparameterize_kl_args(mu_in, scale_in, rng, parameterization, at::kCPU);
  const auto [seed, offset] = read_rng(rng);
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor scale = scale_in.contiguous();
  const int64_t cols = mu.size(-1);
  const int64_t rows = leading_numel(mu);
  at::Tensor z = at::empty_like(mu);
  at::Tensor kl = at::empty(mu.sizes().slice(0, mu.dim() - 1), mu.options().dtype(accumulation_dtype(mu.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_kl_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_parameterization(parameterization, [&](auto p) {
      forward_kernel<decltype(p)::value, scalar_t, acc_t>(
          mu.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
          kl.data_ptr<acc_t>(), rows, cols, static_cast<acc_t>(shift), sample, seed, offset);
    });
  });
  return {z, kl};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cpu(
    const std::optional<at::Tensor>& grad_z_in, const std::optional<at::Tensor>& grad_kl_in,
    const at::Tensor& mu_in, const at::Tensor& scale_in, const at::Tensor& rng,
    int64_t parameterization, double shift, bool sample) {
  check_reparameterize_kl_args(mu_in, scale_in, rng, parameterization, at::kCPU);
  const auto [seed, offset] = read_rng(rng);
  const at::Tensor mu = mu_in.contiguous();
  const at::Tensor scale = scale_in.contiguous();
  const auto [grad_z, grad_kl] = dense_backward_grads(grad_z_in, grad_kl_in, mu);
  const int64_t cols = mu.size(-1);
  const int64_t rows = leading_numel(mu);
  at::Tensor grad_mu = at::empty_like(mu);
  at::Tensor grad_scale = at::empty_like(mu);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_kl_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_parameterization(parameterization, [&](auto p) {
      backward_kernel<decltype(p)::value, scalar_t, acc_t>(
          grad_z.data_ptr<scalar_t>(), grad_kl.data_ptr<acc_t>(), mu.data_ptr<scalar_t>(),
          scale.data_ptr<scalar_t>(), grad_mu.data_ptr<scalar_t>(), grad_scale.data_ptr<scalar_t>(),
          rows, cols, static_cast<acc_t>(shift), sample, seed, offset);
    });
  });
  return {grad_mu, grad_scale};
}

}  // namespace MIBCORE_ISA
}  // namespace mibcore
#endif  // MIBCORE_ISA
