"""The fused reparameterize + KL operator: fake tensors, autograd, per-backend entry.

Two operator pairs, one formula:
  mibcore::reparameterize_kl[_backward]         C++ (schemas in csrc/ops.cpp): CPU kernel in
                                                csrc/cpu, CUDA kernel in csrc/cuda, autograd in
                                                csrc/autograd.cpp (C++: cheap at tiny shapes)
  mibcore::reparameterize_kl_triton[_backward]  Triton kernels (kernels/reparameterize_kl.py),
                                                autograd registered here

Forward returns z and the KL reduced by `reduction` (float32, or float64 for float64 inputs).
The backward regenerates eps from the saved rng tensor; eps is never stored.
"""
from typing import Optional

import torch

from mibcore import _extension
from mibcore.reference.reparameterize_kl import compute_dtype as kl_dtype  # the KL's dtype

PARAMETERIZATION_IDS = {"softplus": 0, "logvar": 1, "std": 2}
REDUCTION_IDS = {"none": 0, "sum": 1, "mean": 2, "batchmean": 3}
_REDUCTION_NAMES = {v: k for k, v in REDUCTION_IDS.items()}


def _fake_forward(mu, scale, rng, parameterization, shift, sample, reduction):
    kl_shape = mu.shape[:-1] if reduction == REDUCTION_IDS["none"] else ()
    return mu.new_empty(mu.shape), mu.new_empty(kl_shape, dtype=kl_dtype(mu.dtype))


def _fake_backward(grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample, reduction):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape)


# ---------------------------------------------------------------- Triton operators
def _row_grad(grad_kl, reduction, mu):
    """Gradient of each row's KL sum from the gradient of the reduced KL (as csrc's expand_kl_grad)."""
    rows_shape = mu.shape[:-1]
    g = grad_kl.to(kl_dtype(mu.dtype))
    if reduction == REDUCTION_IDS["mean"]:
        g = g / mu.numel()
    elif reduction == REDUCTION_IDS["batchmean"]:
        g = g / max(1, torch.Size(rows_shape).numel())
    return g.expand(rows_shape)


@torch.library.custom_op("mibcore::reparameterize_kl_triton", mutates_args=())
def reparameterize_kl_triton(
    mu: torch.Tensor, scale: torch.Tensor, rng: torch.Tensor, parameterization: int, shift: float, sample: bool,
    reduction: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    from mibcore import reference
    from mibcore.kernels import reparameterize_kl as kernels

    z, kl_rows = kernels.forward(mu, scale, rng, parameterization, shift, sample)
    return z, reference.reduce_kl(kl_rows, _REDUCTION_NAMES[reduction], mu.numel())


@torch.library.custom_op("mibcore::reparameterize_kl_triton_backward", mutates_args=())
def reparameterize_kl_triton_backward(
    grad_z: Optional[torch.Tensor],
    grad_kl: Optional[torch.Tensor],
    mu: torch.Tensor,
    scale: torch.Tensor,
    rng: torch.Tensor,
    parameterization: int,
    shift: float,
    sample: bool,
    reduction: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    from mibcore.kernels import reparameterize_kl as kernels

    row_grad = None if grad_kl is None else _row_grad(grad_kl, reduction, mu)
    return kernels.backward(grad_z, row_grad, mu, scale, rng, parameterization, shift, sample)


def _setup_context(ctx, inputs, output):
    mu, scale, rng, *args = inputs
    ctx.save_for_backward(mu, scale, rng)
    ctx.args = args


def _triton_backward(ctx, grad_z, grad_kl):
    mu, scale, rng = ctx.saved_tensors
    grad_mu, grad_scale = reparameterize_kl_triton_backward(grad_z, grad_kl, mu, scale, rng, *ctx.args)
    return grad_mu, grad_scale, None, None, None, None, None


reparameterize_kl_triton.register_fake(_fake_forward)
reparameterize_kl_triton_backward.register_fake(_fake_backward)
reparameterize_kl_triton.register_autograd(_triton_backward, setup_context=_setup_context)

# ---------------------------------------------------------------- C++ operators (cpu, cuda)
if _extension.available():
    torch.library.register_fake("mibcore::reparameterize_kl")(_fake_forward)
    torch.library.register_fake("mibcore::reparameterize_kl_backward")(_fake_backward)


def operator(backend):
    """The forward operator that `backend` ('cpu', 'cuda' or 'triton') runs."""
    if backend == "triton":
        return torch.ops.mibcore.reparameterize_kl_triton.default
    return torch.ops.mibcore.reparameterize_kl.default


def backward_operator(backend):
    if backend == "triton":
        return torch.ops.mibcore.reparameterize_kl_triton_backward.default
    return torch.ops.mibcore.reparameterize_kl_backward.default
