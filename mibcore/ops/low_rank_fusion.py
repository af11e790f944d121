"""The fused low-rank fusion (LMF) operator: fake tensors, autograd, backend entry.

  mibcore::low_rank_fusion[_backward]          C++ (csrc/ops.cpp schemas; CPU kernel csrc/cpu/low_rank_fusion_cpu.cpp;
                                               autograd csrc/autograd.cpp)
  mibcore::low_rank_fusion_triton[_backward]   Triton (kernels/low_rank_fusion.py)

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


def _make_backward(backward_op):
    def backward(ctx, grad_y):
        saved = ctx.saved_tensors
        xs, factors, rank_weights = saved[: ctx.n], saved[ctx.n : 2 * ctx.n], saved[2 * ctx.n]
        grad_x, grad_f, grad_w, grad_b = backward_op(grad_y, list(xs), list(factors), rank_weights)
        w_shape, b_shape = ctx.shapes
        return list(grad_x), list(grad_f), grad_w.reshape(w_shape), grad_b.reshape(b_shape)

    return backward


@torch.library.custom_op("mibcore::low_rank_fusion_triton", mutates_args=())
def low_rank_fusion_triton(
    inputs: list[torch.Tensor], factors: list[torch.Tensor], rank_weights: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    from mibcore.kernels import low_rank_fusion as kernels

    return kernels.forward(inputs, factors, rank_weights, bias)


@torch.library.custom_op("mibcore::low_rank_fusion_triton_backward", mutates_args=())
def low_rank_fusion_triton_backward(
    grad_y: torch.Tensor, inputs: list[torch.Tensor], factors: list[torch.Tensor], rank_weights: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    from mibcore.kernels import low_rank_fusion as kernels

    return kernels.backward(grad_y, inputs, factors, rank_weights)


low_rank_fusion_triton.register_fake(_fake_forward)
low_rank_fusion_triton_backward.register_fake(_fake_backward)
low_rank_fusion_triton.register_autograd(_make_backward(low_rank_fusion_triton_backward), setup_context=_setup_context)

if _extension.available():
    torch.library.register_fake("mibcore::low_rank_fusion")(_fake_forward)
    torch.library.register_fake("mibcore::low_rank_fusion_backward")(_fake_backward)
    # Autograd of the C++ operator: csrc/autograd.cpp (C++: cheap at the paper's tiny shapes).


def operator(backend):
    if backend == "triton":
        return torch.ops.mibcore.low_rank_fusion_triton.default
    return torch.ops.mibcore.low_rank_fusion.default
