"""The fused tensor-fusion operator (TFN + Linear): fake tensors, autograd, backend entry.

  mibcore::tensor_fusion[_backward]          C++ (csrc/ops.cpp schemas; CPU kernel csrc/cpu/tensor_fusion_cpu.cpp)
  mibcore::tensor_fusion_triton[_backward]   Triton (kernels/tensor_fusion.py)

Autograd saves the inputs, the weight and the rng tensor only: the backward regenerates the
outer-product tiles and the dropout mask. No [B, prod(d_i + 1)] tensor is ever allocated.
"""
import torch

from mibcore import _extension


def _fake_forward(inputs, weight, bias, dropout, rng):
    return weight.new_empty(inputs[0].shape[0], weight.shape[0])


def _fake_backward(grad_y, inputs, weight, dropout, rng):
    return [torch.empty_like(x) for x in inputs], torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _setup_context(ctx, inputs, output):
    xs, weight, bias, dropout, rng = inputs
    ctx.save_for_backward(*xs, weight, rng)
    ctx.dropout = dropout
    ctx.has_bias = bias is not None


def _make_backward(backward_op):
    def backward(ctx, grad_y):
        *xs, weight, rng = ctx.saved_tensors
        grad_inputs, grad_weight, grad_bias = backward_op(grad_y, xs, weight, ctx.dropout, rng)
        return list(grad_inputs), grad_weight, grad_bias if ctx.has_bias else None, None, None

    return backward


@torch.library.custom_op("mibcore::tensor_fusion_triton", mutates_args=())
def tensor_fusion_triton(
    inputs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None, dropout: float, rng: torch.Tensor
) -> torch.Tensor:
    from mibcore.kernels import tensor_fusion as kernels

    return kernels.forward(inputs, weight, bias, dropout, rng)


@torch.library.custom_op("mibcore::tensor_fusion_triton_backward", mutates_args=())
def tensor_fusion_triton_backward(
    grad_y: torch.Tensor, inputs: list[torch.Tensor], weight: torch.Tensor, dropout: float, rng: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    from mibcore.kernels import tensor_fusion as kernels

    return kernels.backward(grad_y, inputs, weight, dropout, rng)


tensor_fusion_triton.register_fake(_fake_forward)
tensor_fusion_triton_backward.register_fake(_fake_backward)
tensor_fusion_triton.register_autograd(_make_backward(tensor_fusion_triton_backward), setup_context=_setup_context)

if _extension.available():
    torch.library.register_fake("mibcore::tensor_fusion")(_fake_forward)
    torch.library.register_fake("mibcore::tensor_fusion_backward")(_fake_backward)
    torch.library.register_autograd(
        "mibcore::tensor_fusion",
        _make_backward(torch.ops.mibcore.tensor_fusion_backward.default),
        setup_context=_setup_context,
    )


def operator(backend):
    if backend == "triton":
        return torch.ops.mibcore.tensor_fusion_triton.default
    return torch.ops.mibcore.tensor_fusion.default


def backward_operator(backend):
    if backend == "triton":
        return torch.ops.mibcore.tensor_fusion_triton_backward.default
    return torch.ops.mibcore.tensor_fusion_backward.default
