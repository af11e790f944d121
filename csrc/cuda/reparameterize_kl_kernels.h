// Launchers of the CUDA kernels of mibcore::reparameterize_kl. This header has no torch
// dependency, so that csrc/cuda/*.cu compile standalone with nvcc (the CMake compile check).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.h"

namespace mibcore {
namespace cuda {

struct ReparamArgs {
  const void* mu;
  const void* scale;
  const int64_t* rng;  // device pointer: (seed, offset)
  int64_t rows;
  int64_t cols;
  int64_t parameterization;
  double shift;
  bool sample;
  DType dtype;
};

// z (dtype of mu) and kl_rows (float32, or float64 for float64 inputs).
cudaError_t reparameterize_kl_forward(const ReparamArgs& args, void* z, void* kl_rows, cudaStream_t stream);

// grad_z (dtype of mu), grad_kl_rows (float32 / float64) -> grad_mu, grad_scale (dtype of mu).
cudaError_t reparameterize_kl_backward(const ReparamArgs& args, const void* grad_z, const void* grad_kl_rows,
                                       void* grad_mu, void* grad_scale, cudaStream_t stream);

}  // namespace cuda
}  // namespace mibcore
