"""The fused reparameterize + KL operator: fake tensors, autograd, per-backend entry.

Two operator pairs share one autograd formula:
  mibcore::reparameterize_kl[_backward]         C++ (csrc/ops.cpp): CPU kernel in csrc/cpu,
                                                CUDA kernel in csrc/cuda, by dispatch key
  mibcore::reparameterize_kl_triton[_backward]  Triton kernels (kernels/reparameterize_kl.py)

Forward returns z and the per-row KL sums (shape mu.shape[:-1], fp32 or fp64); the
reduction is applied by the caller in PyTorch, so autograd hands the backward one KL
gradient per row. The backward regenerates eps from the saved rng tensor.
"""
from typing import Optional

import torch

from mibcore import _extension

PARAMETERIZATION_IDS = {"softplus": 0, "logvar": 1, "std": 2}


def kl_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_forward(mu, scale, rng, parameterization, shift, sample):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape[:-1], dtype=kl_dtype(mu.dtype))


def _fake_backward(grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape)


def _register_autograd(forward_name, backward_op):
    def setup_context(ctx, inputs, output):
        mu, scale, rng, parameterization, shift, sample = inputs
        ctx.save_for_backward(mu, scale, rng)
        ctx.args = (parameterization, shift, sample)

    def backward(ctx, grad_z, grad_kl):
        mu, scale, rng = ctx.saved_tensors
        grad_mu, grad_scale = backward_op(grad_z, grad_kl, mu, scale, rng, *ctx.args)
        return grad_mu, grad_scale, None, None, None, None

    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)


# ---------------------------------------------------------------- Triton operators
@torch.library.custom_op("mibcore::reparameterize_kl_triton", mutates_args=())
def reparameterize_kl_triton(
    mu: torch.Tensor, scale: torch.Tensor, rng: torch.Tensor, parameterization: int, shift: float, sample: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from mibcore.kernels import reparameterize_kl as kernels

    return kernels.forward(mu, scale, rng, parameterization, shift, sample)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    from mibcore.kernels import reparameterize_kl as kernels

    return kernels.backward(grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample)


reparameterize_kl_triton.register_fake(_fake_forward)
reparameterize_kl_triton_backward.register_fake(_fake_backward)
_register_autograd("mibcore::reparameterize_kl_triton", reparameterize_kl_triton_backward)

# ---------------------------------------------------------------- C++ operators (cpu, cuda)
if _extension.available():
    torch.library.register_fake("mibcore::reparameterize_kl")(_fake_forward)
    torch.library.register_fake("mibcore::reparameterize_kl_backward")(_fake_backward)
    _register_autograd("mibcore::reparameterize_kl", torch.ops.mibcore.reparameterize_kl_backward.default)


def operator(backend):
    """The forward operator that `backend` ('cpu', 'cuda' or 'triton') runs."""
    if backend == "triton":
        return torch.ops.mibcore.reparameterize_kl_triton.default
    return torch.ops.mibcore.reparameterize_kl.default


def backward_operator(backend):
    if backend == "triton":
        return torch.ops.mibcore.reparameterize_kl_triton_backward.default
    return torch.ops.mibcore.reparameterize_kl_backward.default
