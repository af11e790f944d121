// Host-side argument checks and output allocation shared by the CPU and CUDA
// implementations of mibcore::reparameterize_kl (no device code here).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <utility>

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

// KL reductions, as mibcore.ops.reparameterize_kl.REDUCTION_IDS.
enum Reduction : int64_t { kNone = 0, kSum = 1, kMean = 2, kBatchMean = 3 };

inline void check_reduction(int64_t reduction) {
  TORCH_CHECK(reduction >= kNone && reduction <= kBatchMean,
              "reparameterize_kl: reduction must be 0 (none), 1 (sum), 2 (mean) or 3 (batchmean), got ",
              reduction);
}

// Reduces the per-row KL sums; `numel` is the number of elements of mu.
inline at::Tensor reduce_kl_rows(const at::Tensor& kl_rows, int64_t reduction, int64_t numel) {
  switch (reduction) {
    case kNone: return kl_rows;
    case kSum: return kl_rows.sum();
    case kMean: return kl_rows.sum() / static_cast<double>(numel);  // NaN when empty, like torch.mean
    default: return kl_rows.sum() / static_cast<double>(kl_rows.numel());
  }
}

// The gradient of each row's KL sum given the gradient of the reduced KL.
inline at::Tensor expand_kl_grad(const at::Tensor& grad_kl, int64_t reduction, at::IntArrayRef kl_shape,
                                 int64_t numel, at::ScalarType dtype) {
  at::Tensor g = grad_kl.to(dtype);
  if (reduction == kMean) g = g / static_cast<double>(numel);
  if (reduction == kBatchMean) {
    int64_t rows = 1;
    for (int64_t s : kl_shape) rows *= s;
    g = g / static_cast<double>(rows);
  }
  return g.expand(kl_shape).contiguous();
}

// The backward's incoming gradients as dense tensors: grad_z like mu, and the gradient of each
// row's KL sum (float32/float64). A missing gradient (z or kl unused) is zero.
inline std::pair<at::Tensor, at::Tensor> dense_backward_grads(const std::optional<at::Tensor>& grad_z,
                                                              const std::optional<at::Tensor>& grad_kl,
                                                              const at::Tensor& mu, int64_t reduction) {
  const auto kl_shape = mu.sizes().slice(0, mu.dim() - 1);
  const auto acc = kl_dtype(mu.scalar_type());
  at::Tensor gz = grad_z.has_value() && grad_z->defined()
                      ? grad_z->to(mu.scalar_type()).expand(mu.sizes()).contiguous()
                      : at::zeros_like(mu);
  at::Tensor gk = grad_kl.has_value() && grad_kl->defined()
                      ? expand_kl_grad(*grad_kl, reduction, kl_shape, mu.numel(), acc)
                      : at::zeros(kl_shape, mu.options().dtype(acc));
  return {gz, gk};
}

}  // namespace mibcore
