// Storage <-> compute conversions of the CUDA kernels: float and double compute in
// themselves, half and bfloat16 compute in float.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.h"

namespace mibcore {
namespace cuda {

template <typename T> struct Elem;  // storage <-> compute conversions
template <> struct Elem<float> {
  using acc = float;
  __device__ static float load(float v) { return v; }
  __device__ static float store(float v) { return v; }
};
template <> struct Elem<double> {
  using acc = double;
  __device__ static double load(double v) { return v; }
  __device__ static double store(double v) { return v; }
};
template <> struct Elem<__half> {
  using acc = float;
  __device__ static float load(__half v) { return __half2float(v); }
  __device__ static __half store(float v) { return __float2half_rn(v); }
};
template <> struct Elem<__nv_bfloat16> {
  using acc = float;
  __device__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// The 4 elements of one Philox block (philox.h), moved as one 4 * sizeof(T) access (16 bytes
// for fp32) where the block lies whole in the range and its pointer is aligned to that.
template <typename T>
struct alignas(4 * sizeof(T)) Pack4 {
  T v[4];
};

// Whether every non-null pointer is aligned for Pack4<T> access (then element 4q's is too).
template <typename T, typename... Ptrs>
bool pack4_aligned(Ptrs... ptrs) {
  return ((ptrs == nullptr || reinterpret_cast<uintptr_t>(ptrs) % sizeof(Pack4<T>) == 0) && ...);
}

// Elements first .. first + 3 of p that lie in [lo, hi) (all four, as one access, when `whole`);
// the others are left as they are.
template <typename T>
__device__ __forceinline__ void load4(Pack4<T>& out, const T* __restrict__ p, int64_t first, int64_t lo, int64_t hi,
                                      bool whole) {
  if (whole) {
    out = *reinterpret_cast<const Pack4<T>*>(p + first);
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (first + k >= lo && first + k < hi) out.v[k] = p[first + k];
  }
}

template <typename T>
__device__ __forceinline__ void store4(T* __restrict__ p, const Pack4<T>& in, int64_t first, int64_t lo, int64_t hi,
                                       bool whole) {
  if (whole) {
    *reinterpret_cast<Pack4<T>*>(p + first) = in;
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (first + k >= lo && first + k < hi) p[first + k] = in.v[k];
  }
}

// Calls fn(T{}) with the storage type T of `dtype`.
template <typename Fn>
cudaError_t with_types(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: return fn(float{});
    case DType::kFloat64: return fn(double{});
    case DType::kFloat16: return fn(__half{});
    default: return fn(__nv_bfloat16{});
  }
}

}  // namespace cuda
}  // namespace mibcore
