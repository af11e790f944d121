"""Fuzzing the functional API: hypothesis draws shapes (empty and 1 included), dtypes, strides
and value scales for each operator, and every backend serving it here either matches the
float64 reference (the dropout ops: given the mask the backend draws) or raises a clear error
(ValueError / TypeError naming the function) — never a crash or a silently wrong number.
Derandomized, so that CI runs the same examples every time."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mibcore
from mibcore import functional as MF
from mibcore.ops.rng import draw_rng
from mibcore.reference import philox
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
    return dtype, out


def _clear_error(fn, error):
    return isinstance(error, (ValueError, TypeError)) and fn in str(error)


def _check(fn, backend, run, expected, dtype, terms=1):
    """run() under `backend` equals expected (float64) within dtype's tolerance, widened by
    sqrt(terms) for sums of `terms` products; or it raises a clear error."""
    try:
        with mibcore.backends.use(backend), utils.at_level(backend):
            actual = run()
    except Exception as error:  # noqa: BLE001 - the assertion below says which errors are allowed
        assert _clear_error(fn, error), f"{fn} on {backend}: unclear error {type(error).__name__}: {error}"
        return
    rtol, atol = utils.TOLERANCES[dtype]
    widen = math.sqrt(max(terms, 1))
    magnitude = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol * widen, atol=atol * widen * magnitude)


@FUZZ
@given(st.integers(0, 5), st.integers(1, 7), st.sampled_from(mibcore.constants.PARAMETERIZATIONS), st.data())
def test_reparameterize_kl(rows, cols, parameterization, data):
    dtype, (mu, scale) = data.draw(tensors([(rows, cols), (rows, cols)]))
    if parameterization == "std":
        scale = scale.abs() + 0.1
    kwargs = dict(parameterization=parameterization, sample=False, reduction="none")
    z_ref, kl_ref = mibcore.reference.reparameterize_kl(mu.double(), scale.double(), **kwargs)
    for backend in utils.backends("reparameterize_kl"):
        _check("reparameterize_kl", backend, lambda: MF.reparameterize_kl(mu, scale, **kwargs)[0], z_ref, dtype)
        _check("reparameterize_kl", backend, lambda: MF.reparameterize_kl(mu, scale, **kwargs)[1], kl_ref,
               max(dtype, torch.float32, key=lambda d: d.itemsize), terms=cols)


@FUZZ
@given(st.integers(0, 4), st.lists(st.integers(0, 4), min_size=2, max_size=3), st.integers(1, 5), st.data())
def test_tensor_fusion(batch, dims, out, data):
    n = math.prod(d + 1 for d in dims)
    dtype, tensors_ = data.draw(tensors([(batch, d) for d in dims] + [(out, n), (out, 1)]))
    *inputs, weight, bias = tensors_
    bias = bias[:, 0]  # a strided [out] vector
    if 0 in dims:
        expected = None
    else:
        expected = mibcore.reference.tensor_fusion([x.double() for x in inputs], weight.double(), bias.double())
    for backend in utils.backends("tensor_fusion"):
        run = lambda: MF.tensor_fusion(inputs, weight, bias)  # noqa: E731
        if expected is None:  # zero-width inputs are refused on every backend
            with mibcore.backends.use(backend), utils.at_level(backend), pytest.raises(ValueError, match="at least one feature"):
                run()
        else:
            _check("tensor_fusion", backend, run, expected, dtype, terms=n)


@FUZZ
@given(st.integers(0, 4), st.lists(st.integers(1, 4), min_size=2, max_size=3), st.integers(1, 4),
       st.integers(1, 3), st.data())
def test_low_rank_fusion(batch, dims, out, rank, data):
    shapes = [(batch, d) for d in dims]
    dtype, tensors_ = data.draw(tensors(shapes + [(rank * (d + 1), out) for d in dims] + [(1, rank), (1, out)]))
    inputs, flat_factors, (w, b) = tensors_[: len(dims)], tensors_[len(dims):-2], tensors_[-2:]
    factors = [f.reshape(rank, d + 1, out) for f, d in zip(flat_factors, dims)]
    expected = mibcore.reference.low_rank_fusion([x.double() for x in inputs], [f.double() for f in factors],
                                                 w.double(), b.double())
    terms = rank * max(d + 1 for d in dims)
    for backend in utils.backends("low_rank_fusion"):
        _check("low_rank_fusion", backend, lambda: MF.low_rank_fusion(inputs, factors, w, b), expected, dtype,
               terms=terms)


@FUZZ
@given(st.lists(st.integers(0, 6), min_size=1, max_size=3), st.sampled_from([0.0, 0.3, 0.9]),
       st.sampled_from(["dropout", "dropout_add", "relu_dropout"]), st.data())
def test_dropout_ops(shape, p, op, data):
    dtype, (x, h) = data.draw(tensors([tuple(shape), tuple(shape)]))
    for backend in utils.backends(op, fused=True):
        generator = torch.Generator().manual_seed(3)
        keep = philox.dropout_keep_mask(h.shape, draw_rng("cpu", torch.Generator().manual_seed(3)), 1.0 - p)
        h64 = torch.relu(h.double()) if op == "relu_dropout" else h.double()
        expected = h64 * keep.double() / (1.0 - p)
        if op == "dropout_add":
            expected = expected + x.double()
        fns = {"dropout": lambda: MF.dropout(h, p, generator=generator),
               "dropout_add": lambda: MF.dropout_add(x, h, p, generator=generator),
               "relu_dropout": lambda: MF.relu_dropout(h, p, generator=generator)}
        _check(op, backend, fns[op], expected, dtype)
