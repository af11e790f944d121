// CUDA kernels of the dropout operators: one thread per Philox block of 4 elements (one
// philox_block call gives the block's 4 keep-decisions, exactly as dropout_scale_at of
// philox.h makes them), in a grid-stride loop over the blocks with 64-bit indices. The 4
// elements move as one 4 * sizeof(T) load/store (16 bytes for fp32) where every pointer is
// aligned to it; else, and for the last partial block, element by element. Dropped elements
// are v * 0, not a select, so that inf and NaN give NaN there, as torch's F.dropout does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "dropout_kernels.h"
#include "elem.cuh"
#include "launch.h"
#include "mibcore/philox.h"

namespace mibcore {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 32;  // grid cap: a few waves of resident blocks; the loop strides the rest

__device__ inline float fma_acc(float a, float b, float c) { return fmaf(a, b, c); }
__device__ inline double fma_acc(double a, double b, double c) { return fma(a, b, c); }

// One element: v of b, r of a (kAdd: the residual; kReluBackward: the forward's output).
template <DropoutOp kOp, typename acc_t>
__device__ inline acc_t combine(acc_t v, acc_t r, acc_t s) {
  if constexpr (kOp == DropoutOp::kAdd) return fma_acc(v, s, r);
  if constexpr (kOp == DropoutOp::kRelu) return (v < acc_t(0) ? acc_t(0) : v) * s;  // relu(NaN) = NaN
  return v * s;
}

template <DropoutOp kOp, bool kVec, typename T>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y,
                   const int64_t* __restrict__ rng, int64_t numel, float keep_prob, typename Elem<T>::acc inv) {
  using acc_t = typename Elem<T>::acc;
  constexpr bool kUsesA = kOp == DropoutOp::kAdd || kOp == DropoutOp::kReluBackward;
  uint64_t seed = 0, offset = 0;
  if constexpr (kOp != DropoutOp::kReluBackward) {
    seed = static_cast<uint64_t>(rng[0]);
    offset = static_cast<uint64_t>(rng[1]);
  }
  const int64_t blocks = (numel + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < blocks; q += stride) {
    const int64_t first = 4 * q;
    Pack4<T> av, bv, out;
    const bool whole = kVec && first + 4 <= numel;
    load4(bv, b, first, 0, numel, whole);
    if constexpr (kUsesA) load4(av, a, first, 0, numel, whole);
    acc_t s[4];
    if constexpr (kOp == DropoutOp::kReluBackward) {
#pragma unroll
      for (int k = 0; k < 4; ++k) s[k] = Elem<T>::load(av.v[k]) > acc_t(0) ? inv : acc_t(0);
    } else {
      const Philox4 r = philox_block(static_cast<uint64_t>(q), seed, offset);
      s[0] = uniform_from_bits(r.r0) <= keep_prob ? inv : acc_t(0);
      s[1] = uniform_from_bits(r.r1) <= keep_prob ? inv : acc_t(0);
      s[2] = uniform_from_bits(r.r2) <= keep_prob ? inv : acc_t(0);
      s[3] = uniform_from_bits(r.r3) <= keep_prob ? inv : acc_t(0);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const acc_t r = kOp == DropoutOp::kAdd ? Elem<T>::load(av.v[k]) : acc_t(0);
      out.v[k] = Elem<T>::store(combine<kOp>(Elem<T>::load(bv.v[k]), r, s[k]));
    }
    store4(y, out, first, 0, numel, whole);
  }
}

template <DropoutOp kOp, typename T>
cudaError_t launch(const DropoutArgs& args, cudaStream_t stream) {
  using acc_t = typename Elem<T>::acc;
  unsigned grid = 0;
  const cudaError_t status = grid_for(ceil_div(ceil_div(args.numel, 4), kThreads), kBlocksPerSm, &grid);
  if (status != cudaSuccess) return status;
  const acc_t inv = std::is_same_v<T, double> ? static_cast<acc_t>(args.inv_keep_d) : static_cast<acc_t>(args.inv_keep_f);
  const T* a = static_cast<const T*>(args.a);
  const T* b = static_cast<const T*>(args.b);
  T* y = static_cast<T*>(args.y);
  if (pack4_aligned<T>(a, b, y)) {
    dropout_kernel<kOp, true><<<grid, kThreads, 0, stream>>>(a, b, y, args.rng, args.numel, args.keep_prob, inv);
  } else {
    dropout_kernel<kOp, false><<<grid, kThreads, 0, stream>>>(a, b, y, args.rng, args.numel, args.keep_prob, inv);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t dropout_launch(const DropoutArgs& args, cudaStream_t stream) {
  if (args.numel == 0) return cudaSuccess;
  return with_types(args.dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (args.op) {
      case DropoutOp::kDropout: return launch<DropoutOp::kDropout, T>(args, stream);
      case DropoutOp::kAdd: return launch<DropoutOp::kAdd, T>(args, stream);
      case DropoutOp::kRelu: return launch<DropoutOp::kRelu, T>(args, stream);
      default: return launch<DropoutOp::kReluBackward, T>(args, stream);
    }
  });
}

}  // namespace cuda
}  // namespace mibcore
