"""The fused reparameterize + KL operator: implementations, fake tensors, Triton autograd.

  mibcore::reparameterize_kl[_backward]         C++ (schemas csrc/ops.cpp; kernels csrc/cpu,
                                                csrc/cuda; autograd csrc/autograd.cpp)
  mibcore::reparameterize_kl_triton[_backward]  Triton (kernels/reparameterize_kl.py)

Every forward returns z and the KL of each row (float32, or float64 for float64 inputs); the
functional API reduces the rows with torch ops, so the reduction and its gradient live in one
place (mibcore.reference.reduce_kl). The backward regenerates eps from the saved rng tensor.
"""
from typing import Optional

import torch

from mibcore.constants import accumulation_dtype
from mibcore.ops._declare import TRITON_DEVICES, Implementation, register_cpp_fakes, triton_operator

IMPLEMENTATIONS = {
    "cpu": Implementation("mibcore::reparameterize_kl", ("cpu",)),
    "cuda": Implementation("mibcore::reparameterize_kl", ("cuda",)),
    "triton": Implementation("mibcore::reparameterize_kl_triton", TRITON_DEVICES),
}


def _fake_forward(mu, scale, rng, parameterization, shift, sample):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape[:-1], dtype=accumulation_dtype(mu.dtype))


def _fake_backward(grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape)


register_cpp_fakes({
    "mibcore::reparameterize_kl": _fake_forward,
    "mibcore::reparameterize_kl_backward": _fake_backward,
})


def _triton_forward(
    mu: torch.Tensor, scale: torch.Tensor, rng: torch.Tensor, parameterization: int, shift: float, sample: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from mibcore.kernels import reparameterize_kl as kernels

    return kernels.forward(mu, scale, rng, parameterization, shift, sample)


def _triton_backward(
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


def _setup_context(ctx, inputs, output):
    mu, scale, rng, *args = inputs
    ctx.save_for_backward(mu, scale, rng)
    ctx.args = args


def _gradients(ctx, backward_op, grad_z, grad_kl):
    mu, scale, rng = ctx.saved_tensors
    grad_mu, grad_scale = backward_op(grad_z, grad_kl, mu, scale, rng, *ctx.args)
    return grad_mu, grad_scale, None, None, None, None


triton_operator(
    "reparameterize_kl_triton", _triton_forward, _triton_backward, fake_forward=_fake_forward,
    fake_backward=_fake_backward, setup_context=_setup_context, gradients=_gradients,
)
