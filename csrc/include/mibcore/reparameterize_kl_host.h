// Host-side argument checks and output allocation shared by the CPU and CUDA
// implementations of mibcore::reparameterize_kl (no device code here).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "mibcore/math.h"

namespace mibcore {

// Rows of the [..., D] view: the product of the leading sizes (well defined when D == 0).
inline int64_t leading_numel(const at::Tensor& t) {
  int64_t rows = 1;
  for (int64_t i = 0; i + 1 < t.dim(); ++i) rows *= t.size(i);
  return rows;
}

// KL accumulates in float32, or float64 for float64 inputs.
inline at::ScalarType kl_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_reparameterize_kl_args(const at::Tensor& mu, const at::Tensor& scale,
                                         const at::Tensor& rng, int64_t parameterization,
                                         at::DeviceType device_type) {
  TORCH_CHECK(mu.dim() >= 1, "reparameterize_kl: mu must have at least one dimension");
  TORCH_CHECK(mu.sizes() == scale.sizes(), "reparameterize_kl: scale must have mu's shape ",
              mu.sizes(), ", got ", scale.sizes());
  TORCH_CHECK(mu.scalar_type() == scale.scalar_type(),
              "reparameterize_kl: scale must have mu's dtype ", mu.scalar_type(), ", got ",
              scale.scalar_type());
  TORCH_CHECK(at::isFloatingType(mu.scalar_type()),
              "reparameterize_kl: mu must be floating point, got ", mu.scalar_type());
  TORCH_CHECK(mu.device().type() == device_type && scale.device() == mu.device(),
              "reparameterize_kl: mu and scale must be on one ", at::DeviceTypeName(device_type),
              " device, got ", mu.device(), " and ", scale.device());
  TORCH_CHECK(rng.scalar_type() == at::kLong && rng.numel() == 2,
              "reparameterize_kl: rng must be an int64 tensor of 2 elements (seed, offset)");
  TORCH_CHECK(parameterization >= kSoftplus && parameterization <= kStd,
              "reparameterize_kl: parameterization must be 0 (softplus), 1 (logvar) or 2 (std), got ",
              parameterization);
}

}  // namespace mibcore
