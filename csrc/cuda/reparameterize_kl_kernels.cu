// CUDA kernels of mibcore::reparameterize_kl: one warp per row, lanes striding over the
// columns, the row's KL sum reduced with warp shuffles. eps comes from the shared Philox
// math (csrc/include), so these kernels draw the same samples as the CPU backend.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "elem.cuh"
#include "mibcore/philox.h"
#include "reparameterize_kl_kernels.h"

namespace mibcore {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

template <typename T>
__device__ T warp_sum(T v) {
  for (int delta = 16; delta > 0; delta /= 2) v += __shfl_down_sync(0xffffffffu, v, delta);
  return v;
}

template <int64_t P, typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ scale,
                               const int64_t* __restrict__ rng, scalar_t* __restrict__ z,
                               typename Elem<scalar_t>::acc* __restrict__ kl, int64_t rows, int64_t cols,
                               typename Elem<scalar_t>::acc shift, bool sample) {
  using acc_t = typename Elem<scalar_t>::acc;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps leave together
  const uint64_t seed = static_cast<uint64_t>(rng[0]);
  const uint64_t offset = static_cast<uint64_t>(rng[1]);
  acc_t row_kl = 0;
  for (int64_t c = lane; c < cols; c += 32) {
    const int64_t i = row * cols + c;
    const acc_t m = Elem<scalar_t>::load(mu[i]);
    const StdTerms<acc_t> t = std_terms<P>(Elem<scalar_t>::load(scale[i]), shift);
    z[i] = sample ? Elem<scalar_t>::store(m + t.std * static_cast<acc_t>(normal_at(i, seed, offset))) : mu[i];
    row_kl += kl_element(m, t);
  }
  row_kl = warp_sum(row_kl);
  if (lane == 0) kl[row] = row_kl;
}

template <int64_t P, typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_z, const typename Elem<scalar_t>::acc* __restrict__ grad_kl,
                                const scalar_t* __restrict__ mu, const scalar_t* __restrict__ scale,
                                const int64_t* __restrict__ rng, scalar_t* __restrict__ grad_mu,
                                scalar_t* __restrict__ grad_scale, int64_t rows, int64_t cols,
                                typename Elem<scalar_t>::acc shift, bool sample) {
  using acc_t = typename Elem<scalar_t>::acc;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const uint64_t seed = static_cast<uint64_t>(rng[0]);
  const uint64_t offset = static_cast<uint64_t>(rng[1]);
  const acc_t gk = grad_kl[row];
  for (int64_t c = lane; c < cols; c += 32) {
    const int64_t i = row * cols + c;
    const acc_t m = Elem<scalar_t>::load(mu[i]);
    const acc_t gz = Elem<scalar_t>::load(grad_z[i]);
    const StdTerms<acc_t> t = std_terms<P>(Elem<scalar_t>::load(scale[i]), shift);
    const acc_t eps = sample ? static_cast<acc_t>(normal_at(i, seed, offset)) : acc_t(0);
    grad_mu[i] = Elem<scalar_t>::store(gz + gk * m);
    grad_scale[i] = Elem<scalar_t>::store(gz * eps * t.dstd + gk * kl_element_dscale(t));
  }
}

template <typename Fn>
void with_parameterization(int64_t p, Fn&& fn) {
  if (p == kSoftplus) fn(std::integral_constant<int64_t, kSoftplus>{});
  else if (p == kLogVar) fn(std::integral_constant<int64_t, kLogVar>{});
  else fn(std::integral_constant<int64_t, kStd>{});
}

dim3 grid_for(int64_t rows) { return dim3(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock)); }

}  // namespace

cudaError_t reparameterize_kl_forward(const ReparamArgs& a, void* z, void* kl_rows, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  return with_types(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Elem<scalar_t>::acc;
    with_parameterization(a.parameterization, [&](auto p) {
      forward_kernel<decltype(p)::value, scalar_t><<<grid_for(a.rows), 32 * kWarpsPerBlock, 0, stream>>>(
          static_cast<const scalar_t*>(a.mu), static_cast<const scalar_t*>(a.scale), a.rng,
          static_cast<scalar_t*>(z), static_cast<acc_t*>(kl_rows), a.rows, a.cols, static_cast<acc_t>(a.shift),
          a.sample);
    });
    return cudaGetLastError();
  });
}

cudaError_t reparameterize_kl_backward(const ReparamArgs& a, const void* grad_z, const void* grad_kl_rows,
                                       void* grad_mu, void* grad_scale, cudaStream_t stream) {
  if (a.rows == 0 || a.cols == 0) return cudaSuccess;
  return with_types(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Elem<scalar_t>::acc;
    with_parameterization(a.parameterization, [&](auto p) {
      backward_kernel<decltype(p)::value, scalar_t><<<grid_for(a.rows), 32 * kWarpsPerBlock, 0, stream>>>(
          static_cast<const scalar_t*>(grad_z), static_cast<const acc_t*>(grad_kl_rows),
          static_cast<const scalar_t*>(a.mu), static_cast<const scalar_t*>(a.scale), a.rng,
          static_cast<scalar_t*>(grad_mu), static_cast<scalar_t*>(grad_scale), a.rows, a.cols,
          static_cast<acc_t>(a.shift), a.sample);
    });
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace mibcore
