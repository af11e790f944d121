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

// y [B, out] (dtype) = Z W^T + bias (bias may be null).
cudaError_t tensor_fusion_forward(const FusionArgs& a, const void* bias, void* y, cudaStream_t stream);

// grad_weight [out, N] (dtype) and dA, dV, dT (compute type, zero-initialized by the caller).
cudaError_t tensor_fusion_backward(const FusionArgs& a, const void* grad_y, void* grad_weight, void* dA, void* dV,
                                   void* dT, cudaStream_t stream);

}  // namespace cuda
}  // namespace mibcore
