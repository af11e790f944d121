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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
