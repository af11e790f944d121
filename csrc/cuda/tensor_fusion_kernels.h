// Launchers of the CUDA kernels of mibcore::tensor_fusion (no torch dependency: compiled
// standalone by the CMake nvcc check).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.h"

namespace mibcore {
namespace cuda {

// Padded factors A [B, I], V [B, J], T [B, K] (the constant 1 at index 0) in the compute type
// (float, or double for float64 weights); weight [out, I*J*K] in `dtype`.
struct FusionArgs {
  const void* A;
  const void* V;
  const void* T;
  int64_t B, I, J, K, out;
  const void* weight;
  DType dtype;
  const int64_t* rng;  // device pointer (seed, offset); read only with dropout
  bool dropout;
  float keep_prob, inv_keep;
  double inv_keep_d;  // the exact scale for float64 (dropout_factor in philox.h)
};

// Whether the forward can take these factors: it indexes them with 32-bit offsets, so
// B * max(I, J, K) must stay below 2^31 (a [2^31 / 51, 50] input is 8.4 GB in fp32).
inline bool tensor_fusion_factors_fit(const FusionArgs& a) {
  const int64_t widest = a.I > a.J ? (a.I > a.K ? a.I : a.K) : (a.J > a.K ? a.J : a.K);
  return a.B <= (int64_t{1} << 31) / widest - 1;
}

// Bytes of device workspace tensor_fusion_forward needs on the current device (the partial
// tiles of a split contraction: mibcore/tensor_fusion_plan.h); 0 when it needs none.
cudaError_t tensor_fusion_forward_workspace(const FusionArgs& a, int64_t* bytes);

// y [B, out] (dtype) = Z W^T + bias (bias may be null); workspace: tensor_fusion_forward_workspace's
// bytes (null when 0). One kernel launch, two when the contraction is split.
cudaError_t tensor_fusion_forward(const FusionArgs& a, const void* bias, void* y, void* workspace,
                                  cudaStream_t stream);

// grad_weight [out, N] (dtype) and dA, dV, dT (compute type, zero-initialized by the caller).
cudaError_t tensor_fusion_backward(const FusionArgs& a, const void* grad_y, void* grad_weight, void* dA, void* dV,
                                   void* dT, cudaStream_t stream);

}  // namespace cuda
}  // namespace mibcore
