// Host-side argument checks and output allocation shared by the CPU and CUDA
// implementations of mibcore::reparameterize_kl (no device code here).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <utility>

#include "mibcore/host.h"
#include "mibcore/math.h"

namespace mibcore {

inline void check_reparameterize_kl_args(const at::Tensor& mu, const at::Tensor& scale,
                                         const at::Tensor& rng, int64_t parameterization,
                                         at::DeviceType device_type) {
  TORCH_CHECK_VALUE(mu.dim() >= 1, "reparameterize_kl: mu must have at least one dimension");
  TORCH_CHECK_VALUE(mu.sizes() == scale.sizes(), "reparameterize_kl: scale must have mu's shape ",
                    mu.sizes(), ", got ", scale.sizes());
  TORCH_CHECK_TYPE(mu.scalar_type() == scale.scalar_type(),
                   "reparameterize_kl: scale must have mu's dtype ", mu.scalar_type(), ", got ",
                   scale.scalar_type());
  TORCH_CHECK_TYPE(at::isFloatingType(mu.scalar_type()),
                   "reparameterize_kl: mu must be floating point, got ", mu.scalar_type());
  TORCH_CHECK_VALUE(mu.device().type() == device_type && scale.device() == mu.device(),
                    "reparameterize_kl: mu and scale must be on one ", at::DeviceTypeName(device_type),
                    " device, got ", mu.device(), " and ", scale.device());
  check_rng("reparameterize_kl", rng, "mu", mu);
  TORCH_CHECK_VALUE(parameterization >= kSoftplus && parameterization <= kStd,
                    "reparameterize_kl: parameterization must be 0 (softplus), 1 (logvar) or 2 (std), got ",
                    parameterization);
}

// The backward's incoming gradients as dense tensors: grad_z like mu, and the gradient of each
// row's KL sum (float32/float64). A missing gradient (z or kl unused) is zero. (The reduction
// of the rows, and so its gradient, is torch's: mibcore/ops/reparameterize_kl.py.)
inline std::pair<at::Tensor, at::Tensor> dense_backward_grads(const std::optional<at::Tensor>& grad_z,
                                                              const std::optional<at::Tensor>& grad_kl,
                                                              const at::Tensor& mu) {
  const auto kl_shape = mu.sizes().slice(0, mu.dim() - 1);
  const auto acc = accumulation_dtype(mu.scalar_type());
  for (const auto& [name, g] : {std::pair{"grad_z", &grad_z}, std::pair{"grad_kl", &grad_kl}}) {
    if (g->has_value() && (*g)->defined()) {
      TORCH_CHECK_VALUE((*g)->device() == mu.device(), "reparameterize_kl_backward: ", name, " must be on mu's device ",
                        mu.device(), ", got ", (*g)->device());
      TORCH_CHECK_TYPE(at::isFloatingType((*g)->scalar_type()), "reparameterize_kl_backward: ", name,
                       " must be floating point, got ", (*g)->scalar_type());
    }
  }
  at::Tensor gz = grad_z.has_value() && grad_z->defined()
                      ? grad_z->to(mu.scalar_type()).expand(mu.sizes()).contiguous()
                      : at::zeros_like(mu);
  at::Tensor gk = grad_kl.has_value() && grad_kl->defined()
                      ? grad_kl->to(acc).expand(kl_shape).contiguous()
                      : at::zeros(kl_shape, mu.options().dtype(acc));
  return {gz, gk};
}

}  // namespace mibcore
