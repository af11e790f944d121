"""The fused low-rank fusion (LMF) operator: fake tensors, autograd, backend entry.

  mibcore::low_rank_fusion[_backward]   C++ (csrc/ops.cpp schemas; CPU kernel csrc/cpu/low_rank_fusion_cpu.cpp)

Autograd saves the inputs, factors and rank weights; the backward recomputes the per-modality
projections (one small GEMM each) instead of saving them.
"""
import torch

from mibcore import _extension


def _fake_forward(inputs, factors, rank_weights, bias):
    return factors[0].new_empty(inputs[0].shape[0], factors[0].shape[2])


def _fake_backward(grad_y, inputs, factors, rank_weights):
    return (
        [torch.empty_like(x) for x in inputs],
        [torch.empty_like(f) for f in factors],
        rank_weights.new_empty(factors[0].shape[0]),
        rank_weights.new_empty(factors[0].shape[2]),
    )


def _setup_context(ctx, inputs, output):
    xs, factors, rank_weights, bias = inputs
    ctx.save_for_backward(*xs, *factors, rank_weights)
    ctx.n = len(xs)
    ctx.shapes = (rank_weights.shape, bias.shape)


def _backward(ctx, grad_y):
    saved = ctx.saved_tensors
    xs, factors, rank_weights = saved[: ctx.n], saved[ctx.n : 2 * ctx.n], saved[2 * ctx.n]
    grad_x, grad_f, grad_w, grad_b = torch.ops.mibcore.low_rank_fusion_backward.default(
        grad_y, list(xs), list(factors), rank_weights
    )
    w_shape, b_shape = ctx.shapes
    return list(grad_x), list(grad_f), grad_w.reshape(w_shape), grad_b.reshape(b_shape)


if _extension.available():
    torch.library.register_fake("mibcore::low_rank_fusion")(_fake_forward)
    torch.library.register_fake("mibcore::low_rank_fusion_backward")(_fake_backward)
    torch.library.register_autograd("mibcore::low_rank_fusion", _backward, setup_context=_setup_context)


def operator(backend):
    return torch.ops.mibcore.low_rank_fusion.default
