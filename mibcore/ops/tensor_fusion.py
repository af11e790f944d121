"""The fused tensor-fusion operator (TFN + Linear): implementations, fake tensors, Triton autograd.

  mibcore::tensor_fusion[_backward]          C++ (schemas csrc/ops.cpp; kernels csrc/cpu, csrc/cuda;
                                             autograd csrc/autograd.cpp)
  mibcore::tensor_fusion_triton[_backward]   Triton (kernels/tensor_fusion.py)

Autograd saves the inputs, the weight and the rng tensor only: the backward regenerates the
outer-product tiles and the dropout mask. No [B, prod(d_i + 1)] tensor is ever allocated.
"""
import torch

from mibcore.ops._declare import TRITON_DEVICES, Implementation, register_cpp_fakes, triton_operator

IMPLEMENTATIONS = {
    "cpu": Implementation("mibcore::tensor_fusion", ("cpu",)),
    "cuda": Implementation("mibcore::tensor_fusion", ("cuda",)),
    "triton": Implementation("mibcore::tensor_fusion_triton", TRITON_DEVICES),
}

# `auto` on GPUs: the Triton kernels first. They run the GEMMs on tensor cores (tl.dot, fp32
# accumulation) and split the N contraction over enough programs to fill the GPU; the CUDA
# kernels are 16 x 16 SIMT FMA tiles (no tensor cores), kept as the explicit `cuda` backend.
AUTO_ORDER = {"cuda": ("triton", "cuda", "reference")}


def _fake_forward(inputs, weight, bias, dropout, rng):
    return weight.new_empty(inputs[0].shape[0], weight.shape[0])


def _fake_backward(grad_y, inputs, weight, dropout, rng):
    return [torch.empty_like(x) for x in inputs], torch.empty_like(weight), weight.new_empty(weight.shape[0])


register_cpp_fakes({
    "mibcore::tensor_fusion": _fake_forward,
    "mibcore::tensor_fusion_backward": _fake_backward,
})


def _triton_forward(
    inputs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None, dropout: float, rng: torch.Tensor
) -> torch.Tensor:
    from mibcore.kernels import tensor_fusion as kernels

    return kernels.forward(inputs, weight, bias, dropout, rng)


def _triton_backward(
    grad_y: torch.Tensor, inputs: list[torch.Tensor], weight: torch.Tensor, dropout: float, rng: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    from mibcore.kernels import tensor_fusion as kernels

    return kernels.backward(grad_y, inputs, weight, dropout, rng)


def _setup_context(ctx, inputs, output):
    xs, weight, bias, dropout, rng = inputs
    ctx.save_for_backward(*xs, weight, rng)
    ctx.dropout = dropout
    ctx.has_bias = bias is not None


def _gradients(ctx, backward_op, grad_y):
    *xs, weight, rng = ctx.saved_tensors
    grad_inputs, grad_weight, grad_bias = backward_op(grad_y, xs, weight, ctx.dropout, rng)
    return list(grad_inputs), grad_weight, grad_bias if ctx.has_bias else None, None, None


triton_operator(
    "tensor_fusion_triton", _triton_forward, _triton_backward, fake_forward=_fake_forward,
    fake_backward=_fake_backward, setup_context=_setup_context, gradients=_gradients,
)
