// The element storage types the CUDA kernels are instantiated for (no torch dependency).
#pragma once

namespace mibcore {
namespace cuda {

enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

}  // namespace cuda
}  // namespace mibcore
