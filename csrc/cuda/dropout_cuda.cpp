// Torch-facing host code of the CUDA backend of the dropout operators: checks, allocation,
// the current stream, and the CUDA dispatch-key registration. Built only in CUDA builds; the
// kernels are dropout_kernels.cu. rng stays on the device (the kernels read it: no host sync).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "dropout_kernels.h"
#include "mibcore/dropout_host.h"
#include "torch_dtype.h"

namespace mibcore {
namespace {

// y = op(a, b) for contiguous a (or undefined), b; rng undefined for kReluBackward.
at::Tensor launch(const char* name, cuda::DropoutOp op, const at::Tensor& a, const at::Tensor& b, double p,
                  const at::Tensor& rng) {
  at::Tensor y = at::empty_like(b);
  const DropoutScale d = dropout_scale(p);
  const cuda::DropoutArgs args{op,
                               a.defined() ? a.data_ptr() : nullptr,
                               b.data_ptr(),
                               y.data_ptr(),
                               rng.defined() ? rng.data_ptr<int64_t>() : nullptr,
                               b.numel(),
                               d.keep_prob,
                               d.inv_keep_f,
                               d.inv_keep_d,
                               cuda::to_kernel_dtype(name, b.scalar_type())};
  const auto status = cuda::dropout_launch(args, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(status == cudaSuccess, name, ": CUDA launch failed: ", cudaGetErrorString(status));
  return y;
}

at::Tensor dropout_cuda(const at::Tensor& x, double p, const at::Tensor& rng) {
  check_dropout_args("dropout", x, p, rng, at::kCUDA);
  if (p == 0.0) return x.clone();
  const c10::cuda::CUDAGuard guard(x.device());
  return launch("dropout", cuda::DropoutOp::kDropout, at::Tensor(), x.contiguous(), p, rng.contiguous());
}

at::Tensor dropout_add_cuda(const at::Tensor& x, const at::Tensor& h, double p, const at::Tensor& rng) {
  check_dropout_add_args(x, h, p, rng, at::kCUDA);
  if (p == 0.0) return at::add(x, h);
  const c10::cuda::CUDAGuard guard(x.device());
  return launch("dropout_add", cuda::DropoutOp::kAdd, x.contiguous(), h.contiguous(), p, rng.contiguous());
}

at::Tensor relu_dropout_cuda(const at::Tensor& x, double p, const at::Tensor& rng) {
  check_dropout_args("relu_dropout", x, p, rng, at::kCUDA);
  if (p == 0.0) return at::relu(x);
  const c10::cuda::CUDAGuard guard(x.device());
  return launch("relu_dropout", cuda::DropoutOp::kRelu, at::Tensor(), x.contiguous(), p, rng.contiguous());
}

at::Tensor relu_dropout_backward_cuda(const at::Tensor& grad_y, const at::Tensor& y, double p) {
  check_relu_dropout_backward_args(grad_y, y, p, at::kCUDA);
  const c10::cuda::CUDAGuard guard(y.device());
  return launch("relu_dropout_backward", cuda::DropoutOp::kReluBackward, y.contiguous(), grad_y.contiguous(), p,
                at::Tensor());
}

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, CUDA, m) {
  m.impl("dropout", &dropout_cuda);
  m.impl("dropout_add", &dropout_add_cuda);
  m.impl("relu_dropout", &relu_dropout_cuda);
  m.impl("relu_dropout_backward", &relu_dropout_backward_cuda);
}

}  // namespace mibcore
