"""The fused low-rank fusion (LMF) operator: implementations, fake tensors, Triton autograd.

  mibcore::low_rank_fusion[_backward]          C++ (schemas csrc/ops.cpp; CPU kernel
                                               csrc/cpu/low_rank_fusion_cpu.cpp; autograd csrc/autograd.cpp)
  mibcore::low_rank_fusion_triton[_backward]   Triton (kernels/low_rank_fusion.py)

Autograd saves the inputs, factors and rank weights; the backward recomputes the per-modality
projections (one small GEMM each) instead of saving them. (No CUDA kernel: `auto` picks
triton on GPUs.)
"""
import torch

from mibcore.ops._declare import TRITON_DEVICES, Implementation, register_cpp_fakes, triton_operator

IMPLEMENTATIONS = {
    "cpu": Implementation("mibcore::low_rank_fusion", ("cpu",)),
    "triton": Implementation("mibcore::low_rank_fusion_triton", TRITON_DEVICES),
}


def _fake_forward(inputs, factors, rank_weights, bias):
    return factors[0].new_empty(inputs[0].shape[0], factors[0].shape[2])


def _fake_backward(grad_y, inputs, factors, rank_weights):
    return (
        [torch.empty_like(x) for x in inputs],
        [torch.empty_like(f) for f in factors],
        rank_weights.new_empty(factors[0].shape[0]),
        rank_weights.new_empty(factors[0].shape[2]),
    )


register_cpp_fakes({
    "mibcore::low_rank_fusion": _fake_forward,
    "mibcore::low_rank_fusion_backward": _fake_backward,
})


def _triton_forward(
    inputs: list[torch.Tensor], factors: list[torch.Tensor], rank_weights: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    from mibcore.kernels import low_rank_fusion as kernels

    return kernels.forward(inputs, factors, rank_weights, bias)


def _triton_backward(
    grad_y: torch.Tensor, inputs: list[torch.Tensor], factors: list[torch.Tensor], rank_weights: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    from mibcore.kernels import low_rank_fusion as kernels

    return kernels.backward(grad_y, inputs, factors, rank_weights)


def _setup_context(ctx, inputs, output):
    xs, factors, rank_weights, bias = inputs
    ctx.save_for_backward(*xs, *factors, rank_weights)
    ctx.n = len(xs)
    ctx.shapes = (rank_weights.shape, bias.shape)


def _gradients(ctx, backward_op, grad_y):
    saved = ctx.saved_tensors
    xs, factors, rank_weights = saved[: ctx.n], saved[ctx.n : 2 * ctx.n], saved[2 * ctx.n]
    grad_x, grad_f, grad_w, grad_b = backward_op(grad_y, list(xs), list(factors), rank_weights)
    w_shape, b_shape = ctx.shapes
    return list(grad_x), list(grad_f), grad_w.reshape(w_shape), grad_b.reshape(b_shape)


triton_operator(
    "low_rank_fusion_triton", _triton_forward, _triton_backward, fake_forward=_fake_forward,
    fake_backward=_fake_backward, setup_context=_setup_context, gradients=_gradients,
)
