// Torch-facing host code of the CUDA backend of mibcore::tensor_fusion (built only in CUDA
// builds); the kernels are tensor_fusion_kernels.cu. The dropout (seed, offset) stays on the
// device: the kernels read it there, so no host sync.
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "mibcore/tensor_fusion_host.h"
#include "tensor_fusion_kernels.h"

namespace mibcore {
namespace {

cuda::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kDouble: return cuda::DType::kFloat64;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, "tensor_fusion: unsupported dtype ", t);
  }
}

struct Prepared {
  FusionShape s;
  at::Tensor A, V, T, W, rng;
  cuda::FusionArgs args;
};

Prepared prepare(at::TensorList inputs, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 double dropout, const at::Tensor& rng) {
  Prepared p;
  p.s = check_tensor_fusion_args(inputs, weight, bias, dropout, rng, at::kCUDA);
  TORCH_CHECK(rng.device() == weight.device(), "tensor_fusion: rng must be on the weight's device for cuda");
  auto [A, V, T] = padded_factors(inputs, accumulation_dtype(weight.scalar_type()));
  p.A = A;
  p.V = V;
  p.T = T;
  p.W = weight.contiguous();
  p.rng = rng.contiguous();
  const double keep = 1.0 - dropout;
  p.args = cuda::FusionArgs{p.A.data_ptr(), p.V.data_ptr(), p.T.data_ptr(), p.s.B, p.s.I, p.s.J, p.s.K, p.s.out,
                            p.W.data_ptr(), kernel_dtype(weight.scalar_type()), p.rng.data_ptr<int64_t>(),
                            dropout > 0.0, static_cast<float>(keep), static_cast<float>(1.0 / keep)};
  return p;
}

at::Tensor tensor_fusion_cuda(at::TensorList inputs, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              double dropout, const at::Tensor& rng) {
  const c10::cuda::CUDAGuard guard(weight.device());
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  Prepared p = prepare(inputs, weight, bias, dropout, rng);
  at::Tensor y = at::empty({p.s.B, p.s.out}, weight.options());
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const auto status = cuda::tensor_fusion_forward(p.args, b.defined() ? b.data_ptr() : nullptr, y.data_ptr(),
                                                  c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(status == cudaSuccess, "tensor_fusion: CUDA launch failed: ", cudaGetErrorString(status));
  return y;
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> tensor_fusion_backward_cuda(
    const at::Tensor& grad_y, at::TensorList inputs, const at::Tensor& weight, double dropout, const at::Tensor& rng) {
  const c10::cuda::CUDAGuard guard(weight.device());
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  Prepared p = prepare(inputs, weight, std::nullopt, dropout, rng);
  TORCH_CHECK(grad_y.dim() == 2 && grad_y.size(0) == p.s.B && grad_y.size(1) == p.s.out,
              "tensor_fusion_backward: grad_y must be [", p.s.B, ", ", p.s.out, "]");
  const at::Tensor dy = grad_y.to(weight.scalar_type()).contiguous();
  at::Tensor grad_weight = at::empty_like(p.W);
  at::Tensor dA = at::zeros_like(p.A), dV = at::zeros_like(p.V), dT = at::zeros_like(p.T);
  const auto status = cuda::tensor_fusion_backward(p.args, dy.data_ptr(), grad_weight.data_ptr(), dA.data_ptr(),
                                                   dV.data_ptr(), dT.data_ptr(),
                                                   c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(status == cudaSuccess, "tensor_fusion_backward: CUDA launch failed: ", cudaGetErrorString(status));
  return {unpad_factor_grads(inputs, dA, dV, dT), grad_weight, grad_y.sum(0).to(weight.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, CUDA, m) {
  m.impl("tensor_fusion", &tensor_fusion_cuda);
  m.impl("tensor_fusion_backward", &tensor_fusion_backward_cuda);
}

}  // namespace mibcore
