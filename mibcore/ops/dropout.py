"""The dropout operators: dropout, dropout_add (x + dropout(h)) and relu_dropout.

  mibcore::dropout, dropout_add, relu_dropout[_backward]   C++ (schemas csrc/ops.cpp; kernels
                                                           csrc/cpu/dropout_cpu.cpp, csrc/cuda;
                                                           autograd csrc/autograd.cpp)
  mibcore::*_triton[_backward]                             Triton (kernels/dropout.py)

The keep decisions follow the randomness contract of csrc/include/mibcore/philox.h (the same
as tensor_fusion's dropout): one (seed, offset) per call, no mask ever stored; the backward
regenerates it (dropout of the gradient with the same rng). relu_dropout's backward needs
only its output.
"""
import torch

from mibcore.ops._declare import TRITON_DEVICES, Implementation, register_cpp_fakes, triton_operator

IMPLEMENTATIONS = {
    "cpu": Implementation("mibcore::dropout", ("cpu",)),
    "cuda": Implementation("mibcore::dropout", ("cuda",)),
    "triton": Implementation("mibcore::dropout_triton", TRITON_DEVICES),
}
ADD_IMPLEMENTATIONS = {
    "cpu": Implementation("mibcore::dropout_add", ("cpu",)),
    "cuda": Implementation("mibcore::dropout_add", ("cuda",)),
    "triton": Implementation("mibcore::dropout_add_triton", TRITON_DEVICES),
}
RELU_IMPLEMENTATIONS = {
    "cpu": Implementation("mibcore::relu_dropout", ("cpu",)),
    "cuda": Implementation("mibcore::relu_dropout", ("cuda",)),
    "triton": Implementation("mibcore::relu_dropout_triton", TRITON_DEVICES),
}


# (Explicit parameters, not *args: the boundary checks read the parameter names.)
def _fake_dropout(x, p, rng):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _fake_dropout_add(x, h, p, rng):
    return torch.empty_like(h, memory_format=torch.contiguous_format)


def _fake_relu_dropout_backward(grad_y, y, p):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


register_cpp_fakes({
    "mibcore::dropout": _fake_dropout,
    "mibcore::dropout_add": _fake_dropout_add,
    "mibcore::relu_dropout": _fake_dropout,
    "mibcore::relu_dropout_backward": _fake_relu_dropout_backward,
})


def _kernels():
    from mibcore.kernels import dropout as kernels

    return kernels


def _dropout_triton(x: torch.Tensor, p: float, rng: torch.Tensor) -> torch.Tensor:
    return _kernels().dropout(x, p, rng)


def _dropout_triton_backward(grad_y: torch.Tensor, p: float, rng: torch.Tensor) -> torch.Tensor:
    return _kernels().dropout(grad_y, p, rng)


def _dropout_add_triton(x: torch.Tensor, h: torch.Tensor, p: float, rng: torch.Tensor) -> torch.Tensor:
    return _kernels().dropout_add(x, h, p, rng)


def _relu_dropout_triton(x: torch.Tensor, p: float, rng: torch.Tensor) -> torch.Tensor:
    return _kernels().relu_dropout(x, p, rng)


def _relu_dropout_triton_backward(grad_y: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    return _kernels().relu_dropout_backward(grad_y, y, p)


def _save_rng(ctx, inputs, output):
    *_, p, rng = inputs
    ctx.save_for_backward(rng)
    ctx.p = p


def _save_output(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.p = inputs[1]


def _dropout_gradients(ctx, backward_op, grad_y):
    (rng,) = ctx.saved_tensors
    return backward_op(grad_y, ctx.p, rng), None, None


def _dropout_add_gradients(ctx, backward_op, grad_y):
    (rng,) = ctx.saved_tensors
    return grad_y, backward_op(grad_y, ctx.p, rng), None, None


def _relu_dropout_gradients(ctx, backward_op, grad_y):
    (y,) = ctx.saved_tensors
    return backward_op(grad_y, y, ctx.p), None, None


triton_operator(
    "dropout_triton", _dropout_triton, _dropout_triton_backward, fake_forward=_fake_dropout,
    fake_backward=_fake_dropout, setup_context=_save_rng, gradients=_dropout_gradients,
)
# dropout_add's backward: the gradient itself for x, dropout of it for h (the same kernel).
triton_operator(
    "dropout_add_triton", _dropout_add_triton, _dropout_triton_backward, fake_forward=_fake_dropout_add,
    fake_backward=_fake_dropout, setup_context=_save_rng, gradients=_dropout_add_gradients,
)
triton_operator(
    "relu_dropout_triton", _relu_dropout_triton, _relu_dropout_triton_backward, fake_forward=_fake_dropout,
    fake_backward=_fake_relu_dropout_backward, setup_context=_save_output, gradients=_relu_dropout_gradients,
)
