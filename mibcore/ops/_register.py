"""How an operator module registers its torch operators: the fakes of the C++ operators (whose
schemas and autograd are C++), and the Triton operators with their fakes and autograd
(`python_operator`). The operand checks every operator makes at its boundary live here too.
"""
import functools
import inspect
import os

import torch

from mibcore import _extension
from mibcore.ops._spec import DEVICE_TYPES, Implementation

# Triton kernels are written for CUDA devices; under TRITON_INTERPRET=1 (read by Triton when a
# kernel module is imported, so fixed for the process) the interpreter runs them on CPU tensors.
TRITON_DEVICES = ("cpu",) if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",)


def implementations(name, reference, *, cuda=True):
    """An operator's implementations under the usual names: the reference (a function of the
    normalized arguments), mibcore::<name> for the cpu (and cuda) kernels, mibcore::<name>_triton."""
    table = {
        "reference": Implementation(DEVICE_TYPES, function=reference),
        "cpu": Implementation(("cpu",), op=f"mibcore::{name}"),
        "triton": Implementation(TRITON_DEVICES, op=f"mibcore::{name}_triton"),
    }
    if cuda:
        table["cuda"] = Implementation(("cuda",), op=f"mibcore::{name}")
    return table


def check_operands(op, names, args):
    """The checks every operator makes at its boundary whatever its backend (`names`: the
    parameter names of `args`): all tensor arguments (in lists too) on one device, and floating
    point but for the int64 `rng`.
    (Otherwise a meta tensor among CPU tensors would reach the meta kernel and return
    uninitialized memory, and an integer tensor would reach Triton's interpreter.)"""
    devices = set()
    for name, arg in zip(names, args):
        for t in arg if isinstance(arg, (list, tuple)) else [arg]:
            if not isinstance(t, torch.Tensor):
                continue
            devices.add(str(t.device))
            if name == "rng":  # (as the C++ host checks: the dtype a TypeError, the shape a ValueError)
                if t.dtype != torch.int64:
                    raise TypeError(f"{op}: `rng` must be an int64 tensor (seed, offset), got {t.dtype}")
                if t.shape != (2,):
                    raise ValueError(f"{op}: `rng` must have shape [2] (seed, offset), got {list(t.shape)}")
            elif not t.is_floating_point():
                raise TypeError(f"{op}: `{name}` must be floating point, got {t.dtype}")
    if len(devices) > 1:
        raise ValueError(f"{op}: every tensor argument must be on one device, got {sorted(devices)}")


def _checked(op, fn, check=None):
    """fn behind check_operands and, when given, the operator's own check: check(op, *args)
    raises where the arguments' shapes disagree (before anything is allocated or launched)."""
    parameters = inspect.signature(fn).parameters
    names = list(parameters)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters.values()):
        raise TypeError(f"{op}: give {fn.__name__} explicit parameters (the checks read their names)")

    def checked(*args):
        check_operands(op, names, args)
        if check is not None:
            check(op, *args)
        return fn(*args)

    return checked


def register_cpp_fakes(fakes):
    """Fake (meta) implementations of C++ operators ({qualified name: function}), registered
    only when the extension that defines their schemas is loaded."""
    if _extension.available():
        for name, fake in fakes.items():
            torch.library.register_fake(name)(_checked(name, fake))


def python_operator(name, forward, backward, *, fake_forward, fake_backward, setup_context, gradients,
                    check_forward, check_backward):
    """Defines mibcore::<name> and mibcore::<name>_backward (operators written in Python: the Triton
    host wrappers) as torch.library custom operators
    (schemas inferred from the annotations of `forward` and `backward`), registers their fakes
    and their autograd: `gradients(ctx, backward_op, *output_grads)` returns the gradients of
    the forward's arguments. `check_forward(op, *args)` and `check_backward(op, *args)` are the
    operator's shape checks (from its spec module: the same rules as its public function), made
    by the operators and their fakes before anything else: the kernels index memory by the
    sizes they are given, so a shape that disagrees would read or write out of bounds.
    Returns the forward operator."""
    forward_op = torch.library.custom_op(f"mibcore::{name}", _typed_like(forward, name, check_forward),
                                         mutates_args=())
    backward_op = torch.library.custom_op(f"mibcore::{name}_backward",
                                          _typed_like(backward, f"{name}_backward", check_backward), mutates_args=())
    forward_op.register_fake(_checked(f"mibcore::{name}", fake_forward, check_forward))
    backward_op.register_fake(_checked(f"mibcore::{name}_backward", fake_backward, check_backward))
    forward_op.register_autograd(_once_differentiable(name, gradients, backward_op), setup_context=setup_context)
    return forward_op


def _typed_like(fn, name, check):
    """fn behind its checks, keeping fn's signature (custom_op infers the schema from it)."""
    checked = functools.wraps(fn)(_checked(f"mibcore::{name}", fn, check))
    checked.__signature__ = inspect.signature(fn)
    return checked


def _once_differentiable(name, gradients, backward_op):
    """The autograd formula, refusing a double backward: the backward operator has no autograd
    of its own, so second derivatives through it would silently be zero."""

    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"mibcore::{name}: double backward (a backward with create_graph=True) is not supported "
                "by the fused operators; use the 'reference' backend "
                "(mibcore.backends.use(\"reference\")) for higher-order gradients"
            )
        return gradients(ctx, backward_op, *grads)

    return backward
