"""How an operator module (mibcore/ops/<op>.py) declares its implementations.

Each operator module holds one `IMPLEMENTATIONS` dict: backend name -> Implementation (the
torch operator it runs and the device types it serves). mibcore.backends derives every
backend-to-operator fact from those dicts; nothing else lists them. Autograd has one home
per language: C++ operators in csrc/autograd.cpp, Triton operators here, through
`triton_operator`.
"""
import dataclasses
import os

import torch

from mibcore import _extension

# Triton kernels are written for CUDA devices; under TRITON_INTERPRET=1 (read by Triton when a
# kernel module is imported, so fixed for the process) the interpreter runs them on CPU tensors.
TRITON_DEVICES = ("cpu",) if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",)


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One backend's implementation of an operator: `op` is the qualified torch operator name
    ("mibcore::tensor_fusion"), `devices` the device types it serves when its backend is ready."""

    op: str
    devices: tuple

    def operator(self):
        namespace, name = self.op.split("::")
        return getattr(getattr(torch.ops, namespace), name).default


def register_cpp_fakes(fakes):
    """Fake (meta) implementations of C++ operators ({qualified name: function}), registered
    only when the extension that defines their schemas is loaded."""
    if _extension.available():
        for name, fake in fakes.items():
            torch.library.register_fake(name)(fake)


def triton_operator(name, forward, backward, *, fake_forward, fake_backward, setup_context, gradients):
    """Defines mibcore::<name> and mibcore::<name>_backward as torch.library custom operators
    (schemas inferred from the annotations of `forward` and `backward`), registers their fakes
    and their autograd: `gradients(ctx, backward_op, *output_grads)` returns the gradients of
    the forward's arguments. Returns the forward operator."""
    forward_op = torch.library.custom_op(f"mibcore::{name}", forward, mutates_args=())
    backward_op = torch.library.custom_op(f"mibcore::{name}_backward", backward, mutates_args=())
    forward_op.register_fake(fake_forward)
    backward_op.register_fake(fake_backward)
    forward_op.register_autograd(_once_differentiable(name, gradients, backward_op), setup_context=setup_context)
    return forward_op


def _once_differentiable(name, gradients, backward_op):
    """The autograd formula, refusing a double backward: the backward operator has no autograd
    of its own, so second derivatives through it would silently be zero."""

    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"mibcore::{name}: double backward (a backward with create_graph=True) is not supported "
                "by the fused triton operators; use the 'reference' backend "
                "(mibcore.backends.use(\"reference\")) for higher-order gradients"
            )
        return gradients(ctx, backward_op, *grads)

    return backward
