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

#include "mibcore/dropout_host.h"
#include "mibcore/tensor_fusion_host.h"
#include "tensor_fusion_kernels.h"
#include "torch_dtype.h"

namespace mibcore {
namespace {

struct Prepared {
  FusionShape s;
  at::Tensor A, V, T, W, rng;
  cuda::FusionArgs args;
};

// The padded factors and the kernels' arguments, for arguments already checked (shape s).
Prepared prepare(const FusionShape& s, at::TensorList inputs, const at::Tensor& weight, double dropout,
                 const at::Tensor& rng) {
  Prepared p;
  p.s = s;
  auto [A, V, T] = padded_factors(inputs, accumulation_dtype(weight.scalar_type()));
  p.A = A;
  p.V = V;
  p.T = T;
  p.W = weight.contiguous();
  p.rng = rng.contiguous();
  const DropoutScale d = dropout_scale(dropout);
  p.args = cuda::FusionArgs{p.A.data_ptr(), p.V.data_ptr(), p.T.data_ptr(), p.s.B, p.s.I, p.s.J, p.s.K, p.s.out,
                            p.W.data_ptr(), cuda::to_kernel_dtype("tensor_fusion", weight.scalar_type()),
                            p.rng.data_ptr<int64_t>(), dropout > 0.0, d.keep_prob, d.inv_keep_f, d.inv_keep_d};
  return p;
}

at::Tensor tensor_fusion_cuda(at::TensorList inputs, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              double dropout, const at::Tensor& rng) {
  const FusionShape s = check_tensor_fusion_args(inputs, weight, bias, dropout, rng, at::kCUDA);
  const c10::cuda::CUDAGuard guard(weight.device());
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  Prepared p = prepare(s, inputs, weight, dropout, rng);
  TORCH_CHECK_VALUE(cuda::tensor_fusion_factors_fit(p.args), "tensor_fusion (cuda backend): B * (d_i + 1) must be "
                    "below 2^31 for every input (32-bit offsets), got B = ", s.B, " and dims ", s.I - 1, ", ",
                    s.J - 1, ", ", s.K - 1);
  at::Tensor y = at::empty({p.s.B, p.s.out}, weight.options());
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  // The partial tiles of a split contraction (summed in order by a second kernel): no launch here.
  int64_t workspace_bytes = 0;
  auto status = cuda::tensor_fusion_forward_workspace(p.args, &workspace_bytes);
  TORCH_CHECK(status == cudaSuccess, "tensor_fusion: CUDA device query failed: ", cudaGetErrorString(status));
  const at::Tensor workspace = at::empty({workspace_bytes}, weight.options().dtype(at::kByte));
  status = cuda::tensor_fusion_forward(p.args, b.defined() ? b.data_ptr() : nullptr, y.data_ptr(),
                                       workspace_bytes > 0 ? workspace.data_ptr() : nullptr,
                                       c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(status == cudaSuccess, "tensor_fusion: CUDA launch failed: ", cudaGetErrorString(status));
  return y;
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> tensor_fusion_backward_cuda(
    const at::Tensor& grad_y, at::TensorList inputs, const at::Tensor& weight, double dropout, const at::Tensor& rng) {
  const FusionShape s = check_tensor_fusion_backward_args(grad_y, inputs, weight, dropout, rng, at::kCUDA);
  const c10::cuda::CUDAGuard guard(weight.device());
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  // The input gradients accumulate with float atomics (tensor_fusion_kernels.cu): their
  // summation order varies between runs. grad_weight and grad_bias are deterministic.
  if (s.B > 0 && s.out > 0) {
    at::globalContext().alertNotDeterministic("mibcore::tensor_fusion_backward (cuda backend: input gradients)");
  }
  Prepared p = prepare(s, inputs, weight, dropout, rng);
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
