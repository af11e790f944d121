// torch dtype -> the storage type the CUDA kernels are instantiated for (dtype.h). For the
// torch-facing host code of the CUDA backend only (csrc/cuda/*_cuda.cpp): it needs ATen, which
// the standalone nvcc compile of the kernels does not have.
#pragma once

#include <ATen/ATen.h>

#include "dtype.h"

namespace mibcore {
namespace cuda {

// `op` names the operator in the error (the host checks refuse other dtypes before this).
inline DType to_kernel_dtype(const char* op, at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t, " (float32, float64, float16 or bfloat16)");
  }
}

}  // namespace cuda
}  // namespace mibcore
