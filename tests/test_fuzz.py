"""Fuzzing the functional API: for each operator, hypothesis draws samples from its spec's strategy
(OpSpec.fuzz: shapes with empty and 1 included, dtypes, strides, value scales), and every backend
serving it here either matches the float64 result or raises a clear error (ValueError / TypeError
naming the function), never a crash or a silently wrong number. The float64 result is the
reference's, or, for samples that draw random numbers, the first fused backend's with the same
generator (the Philox contract: tests/test_dropout.py and tests/test_contract.py check that
backend's masks against the mirror). Where the reference refuses a sample, every backend refuses it
with the same exception type. Derandomized, so that CI runs the same examples every time."""
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from mibcore.ops import SPECS
from tests import utils

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@st.composite
def tensors(draw, shapes):
    """Tensors of the given shapes (one dtype, one value scale), some made non-contiguous."""
    dtype = draw(st.sampled_from(utils.DTYPES))
    scale = draw(st.sampled_from([1e-3, 1.0, 8.0]))
    seed = draw(st.integers(0, 2**16))
    strided = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        if strided and len(shape) == 2:  # the transpose of a [d, B] tensor: strides (1, B)
            x = (torch.randn(shape[::-1], generator=g, dtype=torch.float64) * scale).to(dtype).t()
        else:
            x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
        out.append(x)
    return out


def _outcome(spec, backend, sample):
    """The outputs of `sample` on `backend`, or the exception it raised."""
    try:
        return utils.run_sample(spec, backend, sample, gradients=False)[0]
    except Exception as error:  # noqa: BLE001 - the caller says which errors are allowed
        return error


def _clear(op, error):
    return isinstance(error, (ValueError, TypeError)) and op in str(error)


@pytest.mark.parametrize("op", [op for op, spec in SPECS.items() if spec.fuzz is not None])
@FUZZ
@given(data=st.data())
def test_every_backend_matches_or_refuses_clearly(op, data):
    spec = SPECS[op]
    sample = data.draw(spec.fuzz(st, tensors))
    baseline = utils.backends(op, fused=True)[0] if sample.random else "reference"
    expected = _outcome(spec, baseline, sample.map(lambda t: t.double()))
    for backend in utils.backends(op, fused=sample.random):
        actual = _outcome(spec, backend, sample)
        what = f"{op} on {backend}, {sample.label}"
        if isinstance(expected, Exception):
            assert _clear(op, expected), f"{op} on {baseline}: unclear error {expected!r}"
            assert type(actual) is type(expected), f"{what}: {actual!r} where {baseline} raised {expected!r}"
        elif isinstance(actual, Exception):
            assert _clear(op, actual), f"{what}: unclear error {type(actual).__name__}: {actual}"
        else:
            utils.compare_outputs(spec, "cpu", actual, expected, what, sample.depth)


# The Triton operators called directly (torch.ops.mibcore.*_triton*): the calls a valid sample
# makes (forward and backward) with one argument's shape made to disagree. Where the C++ twin
# (the same operator without `_triton`, with the same schema) refuses a call, the Triton
# operator must refuse it too, clearly; a call it runs must read nothing outside its arguments
# (they lie between guard values: two guards, two equal results) and give the twin's shapes.
TRITON = [op for op, spec in SPECS.items() if spec.fuzz is not None and "triton" in utils.backends(op)]


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "mibcore" and "_triton" in func.__name__:
            self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


def _tensors_of(args):
    return [(i, j) for i, a in enumerate(args) for j, t in enumerate(a if isinstance(a, (list, tuple)) else [a])
            if isinstance(t, torch.Tensor)]


def _replace(args, i, j, value):
    """args with tensor j of argument i (j = None: the argument itself) replaced by `value`."""
    args = list(args)
    if isinstance(args[i], (list, tuple)):
        items = list(args[i])
        items[j:j + 1] = value
        args[i] = items
    else:
        args[i] = value[0]
    return args


@st.composite
def _disagreeing(draw, args):
    """(label, args): one tensor's size along one dim changed, or a list with a tensor less/more."""
    i, j = draw(st.sampled_from(_tensors_of(args)))
    t = args[i][j] if isinstance(args[i], (list, tuple)) else args[i]
    if isinstance(args[i], (list, tuple)) and draw(st.booleans()):
        more = draw(st.booleans())
        return f"arg {i}: a tensor {'more' if more else 'less'}", _replace(args, i, j, [t, t] if more else [])
    if t.dim() == 0:
        return f"arg {i}[{j}] unsqueezed", _replace(args, i, j, [t[None]])
    dim = draw(st.integers(0, t.dim() - 1))
    size = draw(st.sampled_from(sorted({0, max(t.shape[dim] - 1, 0), t.shape[dim] + 1} - {t.shape[dim]})))
    index = torch.arange(size) % max(t.shape[dim], 1)
    new = t.index_select(dim, index) if t.shape[dim] else torch.zeros(
        *t.shape[:dim], size, *t.shape[dim + 1:], dtype=t.dtype)
    return f"arg {i}[{j}] dim {dim}: {t.shape[dim]} -> {size}", _replace(args, i, j, [new])


def _guarded(args, value):
    """The tensors of args copied into the middle of buffers filled with `value`."""
    def one(t):
        if not isinstance(t, torch.Tensor):
            return t
        fill = value if t.is_floating_point() else -1
        buffer = torch.full((t.numel() + 64,), fill, dtype=t.dtype)
        view = buffer[32:32 + t.numel()].view(t.shape)
        view.copy_(t)
        return view
    return [[one(t) for t in a] if isinstance(a, (list, tuple)) else one(a) for a in args]


def _call(op, args):
    try:
        return utils.as_tuple(op(*args))
    except Exception as error:  # noqa: BLE001 - the caller says which errors are allowed
        return error


def _flat(outputs):
    return [t for o in outputs for t in (o if isinstance(o, (list, tuple)) else [o])]


@pytest.mark.parametrize("op", TRITON)
@settings(FUZZ, max_examples=10)  # (each example runs the interpreter forward and backward)
@given(data=st.data())
def test_triton_operators_refuse_shapes_that_disagree(op, data):
    spec = SPECS[op]
    sample = data.draw(spec.fuzz(st, tensors))
    recorder = _Recorder()
    try:
        with recorder:
            utils.run_sample(spec, "triton", sample)
    except (ValueError, TypeError):
        pass  # (a sample the public function refuses: no call to break)
    assume(recorder.calls)
    func, args = data.draw(st.sampled_from(recorder.calls))
    label, args = data.draw(_disagreeing(args))
    name = f"mibcore::{func.__name__.split('.')[0]}"
    twin = getattr(torch.ops.mibcore, name.split("::")[1].replace("_triton", ""), None)
    expected = _call(twin, args) if twin is not None else None
    actual, again = _call(func, _guarded(args, 0.0)), _call(func, _guarded(args, float("nan")))
    what = f"{name}, {sample.label}, {label}"
    if isinstance(actual, Exception) or isinstance(expected, Exception):
        assert isinstance(actual, (ValueError, TypeError)) and name in str(actual), f"{what}: {actual!r}"
        return
    for a, b in zip(_flat(actual), _flat(again)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: read out of bounds")
    if expected is not None:
        assert [t.shape for t in _flat(actual)] == [t.shape for t in _flat(expected)], what
