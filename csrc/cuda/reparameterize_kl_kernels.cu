// CUDA kernels of mibcore::reparameterize_kl: one warp per row (a grid-stride loop over the
// rows), each lane taking whole Philox blocks of the row: elements 4q .. 4q + 3 of the flat
// (row-major) index, whose 4 normals come from one Philox call and two Box-Muller pairs
// (normal_block of philox.h, the CPU backend's mapping). The 4 elements move as one
// 4 * sizeof(T) access (16 bytes for fp32) where the block lies whole in the row and the
// pointers are aligned; else, at the row's ends, element by element. Where cols % 4 != 0 a
// block straddles two rows, and each row's warp draws it for its own elements. The row's KL sum
// is reduced with warp shuffles, in a fixed order: deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "elem.cuh"
#include "launch.h"
#include "mibcore/philox.h"
#include "reparameterize_kl_kernels.h"

namespace mibcore {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kBlocksPerSm = 16;  // grid cap (256 threads a block): a few waves; the loop strides the rest

template <typename T>
__device__ T warp_sum(T v) {
  for (int delta = 16; delta > 0; delta /= 2) v += __shfl_down_sync(0xffffffffu, v, delta);
  return v;
}

// The Philox blocks of a row: [e0, e1) = the row's flat elements, q0 .. q1 their blocks.
struct RowBlocks {
  int64_t e0, e1, q0, q1;
  __device__ RowBlocks(int64_t row, int64_t cols)
      : e0(row * cols), e1(row * cols + cols), q0(row * cols / 4), q1((row * cols + cols + 3) / 4) {}
  __device__ bool whole(int64_t q) const { return 4 * q >= e0 && 4 * q + 4 <= e1; }
  __device__ bool in(int64_t i) const { return i >= e0 && i < e1; }
};

__device__ inline int64_t first_row() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
}
__device__ inline int64_t row_stride() { return static_cast<int64_t>(gridDim.x) * kWarpsPerBlock; }

template <int64_t P, bool kVec, typename scalar_t>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    forward_kernel(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ scale,
                   const int64_t* __restrict__ rng, scalar_t* __restrict__ z,
                   typename Elem<scalar_t>::acc* __restrict__ kl, int64_t rows, int64_t cols,
                   typename Elem<scalar_t>::acc shift, bool sample) {
  using acc_t = typename Elem<scalar_t>::acc;
  const int lane = threadIdx.x % 32;
  const uint64_t seed = static_cast<uint64_t>(rng[0]);
  const uint64_t offset = static_cast<uint64_t>(rng[1]);
  for (int64_t row = first_row(); row < rows; row += row_stride()) {  // whole warps loop together
    const RowBlocks r(row, cols);
    acc_t row_kl = 0;
    for (int64_t q = r.q0 + lane; q < r.q1; q += 32) {
      const int64_t first = 4 * q;
      const bool whole = kVec && r.whole(q);
      Pack4<scalar_t> m4, s4, z4;
      load4(m4, mu, first, r.e0, r.e1, whole);
      load4(s4, scale, first, r.e0, r.e1, whole);
      const Normal4 eps = sample ? normal_block(static_cast<uint64_t>(q), seed, offset) : Normal4{};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (!whole && !r.in(first + k)) continue;
        const acc_t m = Elem<scalar_t>::load(m4.v[k]);
        const StdTerms<acc_t> t = std_terms<P>(Elem<scalar_t>::load(s4.v[k]), shift);
        z4.v[k] = sample ? Elem<scalar_t>::store(m + t.std * static_cast<acc_t>(eps.n[k])) : m4.v[k];
        row_kl += kl_element(m, t);
      }
      store4(z, z4, first, r.e0, r.e1, whole);
    }
    row_kl = warp_sum(row_kl);
    if (lane == 0) kl[row] = row_kl;
  }
}

template <int64_t P, bool kVec, typename scalar_t>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    backward_kernel(const scalar_t* __restrict__ grad_z, const typename Elem<scalar_t>::acc* __restrict__ grad_kl,
                    const scalar_t* __restrict__ mu, const scalar_t* __restrict__ scale,
                    const int64_t* __restrict__ rng, scalar_t* __restrict__ grad_mu,
                    scalar_t* __restrict__ grad_scale, int64_t rows, int64_t cols,
                    typename Elem<scalar_t>::acc shift, bool sample) {
  using acc_t = typename Elem<scalar_t>::acc;
  const int lane = threadIdx.x % 32;
  const uint64_t seed = static_cast<uint64_t>(rng[0]);
  const uint64_t offset = static_cast<uint64_t>(rng[1]);
  for (int64_t row = first_row(); row < rows; row += row_stride()) {
    const RowBlocks r(row, cols);
    const acc_t gk = grad_kl[row];
    for (int64_t q = r.q0 + lane; q < r.q1; q += 32) {
      const int64_t first = 4 * q;
      const bool whole = kVec && r.whole(q);
      Pack4<scalar_t> gz4, m4, s4, gm4, gs4;
      load4(gz4, grad_z, first, r.e0, r.e1, whole);
      load4(m4, mu, first, r.e0, r.e1, whole);
      load4(s4, scale, first, r.e0, r.e1, whole);
      const Normal4 eps = sample ? normal_block(static_cast<uint64_t>(q), seed, offset) : Normal4{};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (!whole && !r.in(first + k)) continue;
        const acc_t m = Elem<scalar_t>::load(m4.v[k]);
        const acc_t gz = Elem<scalar_t>::load(gz4.v[k]);
        const StdTerms<acc_t> t = std_terms<P>(Elem<scalar_t>::load(s4.v[k]), shift);
        gm4.v[k] = Elem<scalar_t>::store(gz + gk * m);
        gs4.v[k] = Elem<scalar_t>::store(gz * static_cast<acc_t>(eps.n[k]) * t.dstd + gk * kl_element_dscale(t));
      }
      store4(grad_mu, gm4, first, r.e0, r.e1, whole);
      store4(grad_scale, gs4, first, r.e0, r.e1, whole);
    }
  }
}

template <typename Fn>
void with_parameterization(int64_t p, Fn&& fn) {
  if (p == kSoftplus) fn(std::integral_constant<int64_t, kSoftplus>{});
  else if (p == kLogVar) fn(std::integral_constant<int64_t, kLogVar>{});
  else fn(std::integral_constant<int64_t, kStd>{});
}

// Calls fn(P, kVec) with the parameterization and whether to use Pack4 access (the pointers
// allow it). float64 moves element by element: its 32-byte Pack4 variant spilled registers
// (ptxas, softplus forward; tests/test_cuda_build.py requires no spills).
template <typename scalar_t, typename Fn>
void with_variant(int64_t parameterization, bool vec, Fn&& fn) {
  with_parameterization(parameterization, [&](auto p) {
    if constexpr (sizeof(scalar_t) <= 4) {
      if (vec) return fn(p, std::true_type{});
    }
    fn(p, std::false_type{});
  });
}

}  // namespace

cudaError_t reparameterize_kl_forward(const ReparamArgs& a, void* z, void* kl_rows, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  unsigned grid = 0;
  const cudaError_t status = grid_for(ceil_div(a.rows, kWarpsPerBlock), kBlocksPerSm, &grid);
  if (status != cudaSuccess) return status;
  return with_types(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Elem<scalar_t>::acc;
    const auto* mu = static_cast<const scalar_t*>(a.mu);
    const auto* scale = static_cast<const scalar_t*>(a.scale);
    auto* zs = static_cast<scalar_t*>(z);
    with_variant<scalar_t>(a.parameterization, pack4_aligned<scalar_t>(mu, scale, zs), [&](auto p, auto vec) {
      forward_kernel<decltype(p)::value, decltype(vec)::value, scalar_t><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(
          mu, scale, a.rng, zs, static_cast<acc_t*>(kl_rows), a.rows, a.cols, static_cast<acc_t>(a.shift), a.sample);
    });
    return cudaGetLastError();
  });
}

cudaError_t reparameterize_kl_backward(const ReparamArgs& a, const void* grad_z, const void* grad_kl_rows,
                                       void* grad_mu, void* grad_scale, cudaStream_t stream) {
  if (a.rows == 0 || a.cols == 0) return cudaSuccess;
  unsigned grid = 0;
  const cudaError_t status = grid_for(ceil_div(a.rows, kWarpsPerBlock), kBlocksPerSm, &grid);
  if (status != cudaSuccess) return status;
  return with_types(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Elem<scalar_t>::acc;
    const auto* gz = static_cast<const scalar_t*>(grad_z);
    const auto* mu = static_cast<const scalar_t*>(a.mu);
    const auto* scale = static_cast<const scalar_t*>(a.scale);
    auto* gm = static_cast<scalar_t*>(grad_mu);
    auto* gs = static_cast<scalar_t*>(grad_scale);
    with_variant<scalar_t>(a.parameterization, pack4_aligned<scalar_t>(gz, mu, scale, gm, gs), [&](auto p, auto vec) {
      backward_kernel<decltype(p)::value, decltype(vec)::value, scalar_t><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(
          gz, static_cast<const acc_t*>(grad_kl_rows), mu, scale, a.rng, gm, gs, a.rows, a.cols,
          static_cast<acc_t>(a.shift), a.sample);
    });
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace mibcore
