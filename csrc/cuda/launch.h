// Grid sizes of every CUDA launch of mibcore. All grids are 1-D: gridDim.x allows 2^31 - 1
// blocks, where y and z stop at 65535 (a [B / 16] grid.y fails for B > 2^20). The grid is capped
// at a few waves of resident blocks and the kernels loop over the rest of their work items
// (grid-stride loops, 64-bit indices), so no size overflows a grid dimension.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace mibcore {
namespace cuda {

// Blocks of a launch over `items` work items (each taken by one block per loop iteration):
// min(items, blocks_per_sm * SMs of the current device), at least 1.
// The SM count of the current device.
inline cudaError_t sm_count(int* sms) {
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device);
  return status;
}

inline cudaError_t grid_for(int64_t items, int blocks_per_sm, unsigned* grid) {
  int sms = 0;
  const cudaError_t status = sm_count(&sms);
  if (status != cudaSuccess) return status;
  const int64_t cap = static_cast<int64_t>(std::max(sms, 1)) * blocks_per_sm;
  *grid = static_cast<unsigned>(std::max<int64_t>(1, std::min(items, cap)));  // cap < 2^31 - 1
  return cudaSuccess;
}

// ceil(a / b) for a >= 0, b > 0.
constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace cuda
}  // namespace mibcore
