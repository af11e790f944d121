"""The dropout operators: dropout, dropout_add (x + dropout(h)) and relu_dropout.

  mibcore::dropout, dropout_add, relu_dropout[_backward]   C++ (schemas and autograd
                                                           csrc/ops/dropout.cpp; kernels
                                                           csrc/cpu/dropout_cpu.cpp, csrc/cuda)
  mibcore::*_triton[_backward]                             Triton (mibcore/kernels/dropout.py)

The keep decisions follow the randomness contract of csrc/include/mibcore/philox.h (the same
as tensor_fusion's dropout): one (seed, offset) per call, no mask ever stored; the backward
regenerates it (dropout of the gradient with the same rng). relu_dropout's backward needs
only its output.
"""
import itertools
import math
from functools import partial

import torch
import torch.nn.functional as F

from mibcore import _checks, backends, reference
from mibcore.ops._register import implementations, python_operator, register_cpp_fakes
from mibcore.ops._spec import Benchmark, Launch, OpSpec, Sample, meta, meta_rng, strided
from mibcore.ops.rng import draw_rng


def _check(fn, x, p, training, generator):
    _checks.floating(fn, "x", x)
    p = _checks.probability(fn, "p", p)
    _checks.flag(fn, "training", training)
    _checks.generator(fn, generator)
    return p


def dropout(x, p, *, training=True, generator=None):
    """Inverted dropout: x * keep / (1 - p), the keep decisions from Philox (one (seed, offset)
    draw per call; element j of the row-major flattened x is kept iff its 24-bit uniform is
    <= 1 - p). The mask is never stored: the backward regenerates it. Identity (x itself) when
    not training or p = 0; else a new contiguous tensor of x's dtype (computed in fp32, fp64 for
    fp64)."""
    p = _check("dropout", x, p, training, generator)
    if not training or p == 0.0:
        return x
    return backends.runner("dropout", x.device)(x, p, generator)


def dropout_add(x, h, p, *, training=True, generator=None):
    """x + dropout(h, p) in one pass (the residual pattern); `h`'s mask as `dropout(h)`'s."""
    p = _check("dropout_add", h, p, training, generator)
    _checks.like("dropout_add", "x", x, "h", h)
    if not training or p == 0.0:
        return x + h
    return backends.runner("dropout_add", h.device)(x, h, p, generator)


def relu_dropout(x, p, *, training=True, generator=None):
    """dropout(relu(x), p) in one pass; the backward needs only the output (no mask, no x)."""
    p = _check("relu_dropout", x, p, training, generator)
    if not training or p == 0.0:
        return torch.relu(x)
    return backends.runner("relu_dropout", x.device)(x, p, generator)


def _call_fused(op, *args):
    # (x, p, generator) or (x, h, p, generator): the generator becomes the call's rng draw.
    *tensors_and_p, generator = args
    return op(*tensors_and_p, draw_rng(args[0].device, generator))


def _reference(fn):
    return lambda *args: fn(*args[:-1], generator=args[-1])


_SHAPES = ((3, 5), (7,), (0, 4), (2, 3, 33))
_GPU_SHAPES = ((4097, 33),)  # several blocks, a tail of every vector width


def _samples(two_inputs):
    def samples(device, dtype):
        g = torch.Generator().manual_seed(0)
        out = []
        shapes = _SHAPES + (_GPU_SHAPES if device != "cpu" else ())
        for shape, p in itertools.product(shapes, (0.25, 0.9)):
            xs = [torch.randn(shape, dtype=torch.float64, generator=g).to(dtype=dtype, device=device)
                  for _ in range(1 + two_inputs)]
            out.append(Sample(f"{list(shape)} p={p}", (*xs, p), {"generator": None}, random=True))
        x = strided(torch.randn(6, 5, dtype=torch.float64, generator=g).to(dtype=dtype, device=device))
        out.append(Sample("strided p=0.5", (*[x] * (1 + two_inputs), 0.5), random=True))
        out.append(Sample("eval", (*[x] * (1 + two_inputs), 0.5), {"training": False}))
        return out
    return samples


def _double_backward(function, two_inputs):
    def make():
        g = torch.Generator().manual_seed(0)
        xs = [torch.randn(3, 5, dtype=torch.float64, generator=g).requires_grad_() for _ in range(1 + two_inputs)]
        return xs, lambda *xs: function(*xs, 0.5, generator=torch.Generator().manual_seed(1))
    return make


def _benchmark(two_inputs, shape, moved):
    def make(device):
        return Sample(label, (*[torch.randn(shape, device=device) for _ in range(1 + two_inputs)], 0.5), random=True)

    label = "x".join(map(str, shape)) + " p=0.5"
    return Benchmark(label, "paper", make, bytes_moved=moved * 4 * math.prod(shape))


def _benchmarks(two_inputs, moved):
    # The encoders' attention probabilities [B * H, T, T] (batch 32, 5 heads, T 50; the paper
    # sample) and their FFN's hidden [B, T, 4d]. `moved`: elements moved per element at the floor
    # (the forward reads the inputs and writes the output; the backward reads the gradient, for
    # relu_dropout the output too, and writes each input's gradient; no mask is stored).
    return lambda: (_benchmark(two_inputs, (160, 50, 50), moved), _benchmark(two_inputs, (32, 50, 200), moved))


def _fuzz(two_inputs):
    def fuzz(st, tensors):
        @st.composite
        def samples(draw):
            shape = tuple(draw(st.lists(st.integers(0, 6), min_size=1, max_size=3)))
            p = draw(st.sampled_from([0.0, 0.3, 0.9]))
            xs = draw(tensors([shape] * (1 + two_inputs)))
            return Sample(f"{list(shape)} p={p}", (*xs, p), random=True)
        return samples()
    return fuzz


def _launches():
    from mibcore.kernels import dropout as k

    shapes = ((32, 1024), (4096, 1024), (32, 50, 1024), (7,))  # (32, 50, 1024): the paper's sequence features
    for shape, dtype in itertools.product(shapes, (torch.float32, torch.float16, torch.bfloat16, torch.float64)):
        x = meta(*shape, dtype=dtype)
        moved = 2 * dtype.itemsize * x.numel()
        yield Launch(f"{'x'.join(map(str, shape))}", dtype, (
            ("forward", partial(k.dropout, x, 0.1, meta_rng()), moved, 0),
            ("dropout_add", partial(k.dropout_add, x, x, 0.1, meta_rng()), 3 * dtype.itemsize * x.numel(), 0),
            ("relu_dropout", partial(k.relu_dropout, x, 0.1, meta_rng()), moved, 0),
            ("relu_dropout backward", partial(k.relu_dropout_backward, x, x, 0.1), 3 * dtype.itemsize * x.numel(), 0),
        ), report=shape in ((4096, 1024), (32, 50, 1024)) and dtype == torch.float32)


def _spec(name, function, two_inputs, moved, baseline, **kwargs):
    benchmarks = _benchmarks(two_inputs, moved)
    return OpSpec(name, function, implementations(name, _reference(getattr(reference, name))), _call_fused, _samples(two_inputs),
                  _double_backward(function, two_inputs), paper_sample=benchmarks()[0].make,
                  fuzz=_fuzz(two_inputs), benchmarks=benchmarks, baseline=baseline, **kwargs)


# (The three operators share one Triton module: its launch table is listed once, under dropout.)
# Their baselines: nn.Dropout's F.dropout.
SPECS = (
    _spec("dropout", dropout, False, 4, lambda x, p: F.dropout(x, p, True), launches=_launches),
    _spec("dropout_add", dropout_add, True, 6, lambda x, h, p: x + F.dropout(h, p, True)),
    _spec("relu_dropout", relu_dropout, False, 5, lambda x, p: F.dropout(torch.relu(x), p, True)),
)


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


# The Triton operators' checks (as the C++ host code, csrc/include/mibcore/dropout_host.h): p, and
# the shapes that must agree (a grad_y of another shape than y was read out of bounds).
def _check_p(op, x, p, rng):
    _checks.probability(op, "p", p)


def _check_add(op, x, h, p, rng):
    _checks.like(op, "x", x, "h", h)
    _checks.probability(op, "p", p)


def _check_relu_backward(op, grad_y, y, p):
    _checks.like(op, "grad_y", grad_y, "y", y)
    _checks.probability(op, "p", p)


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


python_operator(
    "dropout_triton", _dropout_triton, _dropout_triton_backward, fake_forward=_fake_dropout,
    fake_backward=_fake_dropout, setup_context=_save_rng, gradients=_dropout_gradients,
    check_forward=_check_p, check_backward=_check_p,
)
# dropout_add's backward: the gradient itself for x, dropout of it for h (the same kernel).
python_operator(
    "dropout_add_triton", _dropout_add_triton, _dropout_triton_backward, fake_forward=_fake_dropout_add,
    fake_backward=_fake_dropout, setup_context=_save_rng, gradients=_dropout_add_gradients,
    check_forward=_check_add, check_backward=_check_p,
)
python_operator(
    "relu_dropout_triton", _relu_dropout_triton, _relu_dropout_triton_backward, fake_forward=_fake_dropout,
    fake_backward=_fake_relu_dropout_backward, setup_context=_save_output, gradients=_relu_dropout_gradients,
    check_forward=_check_p, check_backward=_check_relu_backward,
)
