// Torch-facing host code of the CUDA backend of mibcore::reparameterize_kl: checks,
// allocation, the current stream, and the CUDA dispatch-key registration. Built only in
// CUDA builds (it needs a CUDA build of torch); the kernels are reparameterize_kl_kernels.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "mibcore/reparameterize_kl_host.h"
#include "reparameterize_kl_kernels.h"
#include "torch_dtype.h"

namespace mibcore {
namespace {

cuda::ReparamArgs make_args(const at::Tensor& mu, const at::Tensor& scale, const at::Tensor& rng,
                            int64_t parameterization, double shift, bool sample) {
  const cuda::DType dtype = cuda::to_kernel_dtype("reparameterize_kl", mu.scalar_type());
  return cuda::ReparamArgs{mu.data_ptr(), scale.data_ptr(), rng.data_ptr<int64_t>(), leading_numel(mu),
                           mu.size(-1), parameterization, shift, sample, dtype};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_cuda(const at::Tensor& mu_in, const at::Tensor& scale_in,
                                                          const at::Tensor& rng_in, int64_t parameterization,
                                                          double shift, bool sample) {
  check_reparameterize_kl_args(mu_in, scale_in, rng_in, parameterization, at::kCUDA);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const at::Tensor mu = mu_in.contiguous(), scale = scale_in.contiguous(), rng = rng_in.contiguous();
  at::Tensor z = at::empty_like(mu);
  at::Tensor kl = at::zeros(mu.sizes().slice(0, mu.dim() - 1), mu.options().dtype(accumulation_dtype(mu.scalar_type())));
  const auto status = cuda::reparameterize_kl_forward(make_args(mu, scale, rng, parameterization, shift, sample),
                                                      z.data_ptr(), kl.data_ptr(),
                                                      c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(status == cudaSuccess, "reparameterize_kl: CUDA launch failed: ", cudaGetErrorString(status));
  return {z, kl};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cuda(
    const std::optional<at::Tensor>& grad_z_in, const std::optional<at::Tensor>& grad_kl_in, const at::Tensor& mu_in,
    const at::Tensor& scale_in, const at::Tensor& rng_in, int64_t parameterization, double shift, bool sample) {
  check_reparameterize_kl_args(mu_in, scale_in, rng_in, parameterization, at::kCUDA);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const at::Tensor mu = mu_in.contiguous(), scale = scale_in.contiguous(), rng = rng_in.contiguous();
  const auto [grad_z, grad_kl] = dense_backward_grads(grad_z_in, grad_kl_in, mu);
  at::Tensor grad_mu = at::empty_like(mu), grad_scale = at::empty_like(mu);
  const auto status = cuda::reparameterize_kl_backward(make_args(mu, scale, rng, parameterization, shift, sample),
                                                       grad_z.data_ptr(), grad_kl.data_ptr(), grad_mu.data_ptr(),
                                                       grad_scale.data_ptr(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(status == cudaSuccess, "reparameterize_kl_backward: CUDA launch failed: ", cudaGetErrorString(status));
  return {grad_mu, grad_scale};
}

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, CUDA, m) {
  m.impl("reparameterize_kl", &reparameterize_kl_cuda);
  m.impl("reparameterize_kl_backward", &reparameterize_kl_backward_cuda);
}

}  // namespace mibcore
