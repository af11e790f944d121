// Host-side helpers of mibcore::tensor_fusion shared by the CPU and CUDA implementations:
// argument checks, the padded factors [1; x], and the dropout parameters.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

#include "mibcore/dropout_host.h"
#include "mibcore/host.h"

namespace mibcore {

// Sizes of the implicit outer product: factors A [B, I], V [B, J], T [B, K] (with the
// constant 1 at index 0); N = I * J * K columns. Two inputs use V = [1] (J = 1).
struct FusionShape {
  int64_t B, I, J, K, N, out;
};

struct Dropout {
  bool active;
  float keep_prob, inv_keep;
  double inv_keep_d;  // the exact scale for float64 (see dropout_factor in philox.h)
  uint64_t seed, offset;
};

inline FusionShape check_tensor_fusion_args(at::TensorList inputs, const at::Tensor& weight,
                                            const std::optional<at::Tensor>& bias, double dropout,
                                            const at::Tensor& rng, at::DeviceType device_type) {
  TORCH_CHECK_VALUE(inputs.size() == 2 || inputs.size() == 3, "tensor_fusion: inputs must hold 2 or 3 tensors");
  const int64_t B = inputs[0].size(0);
  for (size_t n = 0; n < inputs.size(); ++n) {
    const at::Tensor& x = inputs[n];
    TORCH_CHECK_VALUE(x.dim() == 2 && x.size(0) == B, "tensor_fusion: inputs[", n, "] must be [B, d] with B = ", B);
    TORCH_CHECK_TYPE(x.scalar_type() == weight.scalar_type(),
                     "tensor_fusion: inputs[", n, "] must have weight's dtype ",
                     weight.scalar_type(), ", got ", x.scalar_type());
    TORCH_CHECK_VALUE(x.device() == weight.device(), "tensor_fusion: inputs[", n, "] must be on weight's device ",
                      weight.device(), ", got ", x.device());
  }
  TORCH_CHECK_VALUE(weight.device().type() == device_type, "tensor_fusion: weight must be a ",
                    at::DeviceTypeName(device_type), " tensor for this backend, got one on ", weight.device());
  TORCH_CHECK_TYPE(at::isFloatingType(weight.scalar_type()), "tensor_fusion: weight must be floating point, got ",
                   weight.scalar_type());
  const int64_t I = inputs[0].size(1) + 1;
  const int64_t J = inputs.size() == 3 ? inputs[1].size(1) + 1 : 1;
  const int64_t K = inputs.back().size(1) + 1;
  int64_t N = 0;  // I * J * K, which must not wrap around for huge dims
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(I, J, &N) && !__builtin_mul_overflow(N, K, &N),
                    "tensor_fusion: the outer product of inputs of sizes ", I - 1, ", ", J - 1, ", ", K - 1,
                    " has 2^63 columns or more");
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == N, "tensor_fusion: weight must be [out, ", N, "], got ",
                    weight.sizes());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), "tensor_fusion: bias must be [out] = [",
                      weight.size(0), "], got ", bias->sizes());
    check_same_dtype_device("tensor_fusion", "bias", *bias, "weight", weight);
  }
  TORCH_CHECK_VALUE(dropout >= 0.0 && dropout < 1.0, "tensor_fusion: dropout must be in [0, 1), got ", dropout);
  check_rng("tensor_fusion", rng, "weight", weight);
  return FusionShape{B, I, J, K, N, weight.size(0)};
}

// The backward's arguments: those of the forward (no bias) and grad_y [B, out], floating point, on
// the weight's device (any float dtype: the kernels take it converted to the weight's).
inline FusionShape check_tensor_fusion_backward_args(const at::Tensor& grad_y, at::TensorList inputs,
                                                     const at::Tensor& weight, double dropout, const at::Tensor& rng,
                                                     at::DeviceType device_type) {
  const FusionShape s = check_tensor_fusion_args(inputs, weight, std::nullopt, dropout, rng, device_type);
  TORCH_CHECK_VALUE(grad_y.dim() == 2 && grad_y.size(0) == s.B && grad_y.size(1) == s.out,
                    "tensor_fusion_backward: grad_y must be [", s.B, ", ", s.out, "], got ", grad_y.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(grad_y.scalar_type()),
                   "tensor_fusion_backward: grad_y must be floating point, got ",
                   grad_y.scalar_type());
  TORCH_CHECK_VALUE(grad_y.device() == weight.device(), "tensor_fusion_backward: grad_y must be on weight's device ",
                    weight.device(), ", got ", grad_y.device());
  return s;
}

// Reads (seed, offset) only when dropout is on (on the host: CPU rng, or a CUDA rng copied back).
inline Dropout read_dropout(const at::Tensor& rng, double dropout) {
  if (dropout == 0.0) return Dropout{false, 1.0f, 1.0f, 1.0, 0, 0};
  const at::Tensor r = rng.to(at::kCPU).contiguous();
  const int64_t* p = r.data_ptr<int64_t>();
  const DropoutScale scale = dropout_scale(dropout);
  return Dropout{true, scale.keep_prob, scale.inv_keep_f, scale.inv_keep_d, static_cast<uint64_t>(p[0]),
                 static_cast<uint64_t>(p[1])};
}

// [1; x] for each factor, in the accumulation dtype; two inputs get V = ones [B, 1].
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> padded_factors(at::TensorList inputs, at::ScalarType acc) {
  auto pad = [&](const at::Tensor& x) {
    return at::cat({at::ones({x.size(0), 1}, x.options().dtype(acc)), x.to(acc)}, 1).contiguous();
  };
  const int64_t B = inputs[0].size(0);
  at::Tensor A = pad(inputs[0]);
  at::Tensor V = inputs.size() == 3 ? pad(inputs[1]) : at::ones({B, 1}, inputs[0].options().dtype(acc));
  at::Tensor T = pad(inputs.back());
  return {A, V, T};
}

// Gradients of the inputs from those of the padded factors (dropping the constant's column).
inline std::vector<at::Tensor> unpad_factor_grads(at::TensorList inputs, const at::Tensor& dA, const at::Tensor& dV,
                                                  const at::Tensor& dT) {
  auto unpad = [](const at::Tensor& g, const at::Tensor& x) {
    return g.narrow(1, 1, x.size(1)).to(x.scalar_type()).clone(at::MemoryFormat::Contiguous);  // fresh storage
  };
  if (inputs.size() == 2) return {unpad(dA, inputs[0]), unpad(dT, inputs[1])};
  return {unpad(dA, inputs[0]), unpad(dV, inputs[1]), unpad(dT, inputs[2])};
}

}  // namespace mibcore
