"""The fused tensor-fusion operator (TFN + Linear): fake tensors, autograd, backend entry.

  mibcore::tensor_fusion[_backward]   C++ (csrc/ops.cpp schemas; CPU kernel csrc/cpu/tensor_fusion_cpu.cpp)

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
    ctx.n_inputs = len(xs)
    ctx.dropout = dropout
    ctx.has_bias = bias is not None


def _backward(ctx, grad_y):
    *xs, weight, rng = ctx.saved_tensors
    grad_inputs, grad_weight, grad_bias = torch.ops.mibcore.tensor_fusion_backward.default(
        grad_y, xs, weight, ctx.dropout, rng
    )
    return list(grad_inputs), grad_weight, grad_bias if ctx.has_bias else None, None, None


if _extension.available():
    torch.library.register_fake("mibcore::tensor_fusion")(_fake_forward)
    torch.library.register_fake("mibcore::tensor_fusion_backward")(_fake_backward)
    torch.library.register_autograd("mibcore::tensor_fusion", _backward, setup_context=_setup_context)


def operator(backend):
    return torch.ops.mibcore.tensor_fusion.default
