"""The dropout operators' kernels (torch.ops.mibcore.dropout, dropout_add, relu_dropout,
relu_dropout_backward) called directly, against tests/philox.py and float64 math.

The keep-mask is predicted exactly from (seed, offset); values are checked against a float64
computation rounded to the dtype: exact for the single multiplies (a product of two floats is
exact in float64), to one rounding for dropout_add's fused multiply-add.
"""
import pytest
import torch

import mibcore

from tests import utils
from tests.utils import DTYPES

ops = torch.ops.mibcore
SIZES = [1, 3, 7, 64, 4097]
PS = [0.5, 0.9, 0.1]
RNG = torch.tensor([0x1234_5678_9ABC, 77])


def keep_mask(shape, p, rng=RNG):
    return utils.predicted_keep(shape, p, rng=rng)


def scale(shape, p, dtype, rng=RNG):
    """The float64 scale per element: 1 / (1 - p) (rounded to fp32 unless fp64) or 0."""
    inv = 1.0 / (1.0 - p)
    if dtype != torch.float64:
        inv = float(torch.tensor(inv, dtype=torch.float32))
    return keep_mask(shape, p, rng).double() * inv  # (torch.where of two floats would round inv to fp32)


def rounded(v64, dtype):
    """float64 -> dtype the way the kernels round: to fp32 first (their compute type), then to dtype."""
    return v64.to(dtype) if dtype == torch.float64 else v64.float().to(dtype)


def inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).mul(3).to(dtype)


def assert_exact(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


# -- dropout -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("p", PS)
def test_dropout_exact(dtype, n, p):
    x = inputs((n,), dtype)
    y = ops.dropout(x, p, RNG)
    assert_exact(y, rounded(x.double() * scale(x.shape, p, dtype), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_large_odd_size(dtype):
    x = inputs((400001,), dtype)
    y = ops.dropout(x, 0.5, RNG)
    assert_exact(y, rounded(x.double() * scale(x.shape, 0.5, dtype), dtype))
    kept = keep_mask(x.shape, 0.5).double().mean().item()
    assert abs(kept - 0.5) < 0.005


@pytest.mark.parametrize("rng", [torch.tensor([0, 0]), torch.tensor([-5, 2**40 + 3]), torch.tensor([2**62, -1])])
def test_dropout_seed_and_offset_words(rng):
    x = inputs((1031,), torch.float32)
    assert_exact(ops.dropout(x, 0.3, rng), rounded(x.double() * scale(x.shape, 0.3, torch.float32, rng), torch.float32))


def test_dropout_different_offsets_differ():
    x = torch.ones(4096)
    a = ops.dropout(x, 0.5, torch.tensor([1, 0]))
    b = ops.dropout(x, 0.5, torch.tensor([1, 1]))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_non_contiguous(dtype):
    base = inputs((37, 66), dtype)
    for x in (base.t(), base[:, ::3], base[5:, 1:40].t()):
        assert not x.is_contiguous()
        y = ops.dropout(x, 0.4, RNG)
        expected = rounded(x.contiguous().double() * scale(x.shape, 0.4, dtype), dtype)
        assert_exact(y.contiguous(), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_unaligned_view(dtype):
    base = inputs((4099,), dtype)
    x = base[1:]  # storage offset 1: not a multiple of the vector width
    assert_exact(ops.dropout(x, 0.5, RNG), rounded(x.double() * scale(x.shape, 0.5, dtype), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (3, 0, 5)])
def test_empty(dtype, shape):
    x = torch.empty(shape, dtype=dtype)
    for y in (ops.dropout(x, 0.5, RNG), ops.relu_dropout(x, 0.5, RNG), ops.dropout_add(x, x, 0.5, RNG),
              ops.relu_dropout_backward(x, x, 0.5)):
        assert y.shape == x.shape and y.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_p_zero(dtype):
    x = inputs((2, 3, 5), dtype)
    h = inputs((2, 3, 5), dtype, seed=1)
    y = ops.dropout(x, 0.0, RNG)
    assert_exact(y, x)
    assert y.data_ptr() != x.data_ptr()  # a copy
    assert_exact(ops.relu_dropout(x, 0.0, RNG), torch.relu(x))
    assert_exact(ops.dropout_add(x, h, 0.0, RNG), x + h)
    assert_exact(ops.relu_dropout_backward(h, x, 0.0), torch.where(x > 0, h, torch.zeros_like(h)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf(dtype):
    x = inputs((203,), dtype)
    x[::5] = float("nan")
    x[1::7] = float("inf")
    x[2::11] = -float("inf")
    s = scale(x.shape, 0.5, dtype)
    # x * 0 where dropped: inf and NaN give NaN there (as F.dropout, which multiplies by the mask).
    expected = rounded(x.double() * s, dtype)
    assert torch.isnan(expected[(s == 0) & torch.isinf(x)]).all()
    assert_exact(ops.dropout(x, 0.5, RNG), expected)
    assert_exact(ops.relu_dropout(x, 0.5, RNG), rounded(torch.relu(x.double()) * s, dtype))


# -- relu_dropout and its backward ------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES + [400001])
def test_relu_dropout_exact(dtype, n):
    x = inputs((n,), dtype)
    y = ops.relu_dropout(x, 0.3, RNG)
    assert_exact(y, rounded(torch.relu(x.double()) * scale(x.shape, 0.3, dtype), dtype))
    assert (y >= 0).all()


def test_relu_dropout_keeps_nan_and_signed_zero_like_torch_relu():
    x = torch.tensor([float("nan"), -0.0, -1.0, 2.0] * 8)
    y = ops.relu_dropout(x, 0.0001, RNG)
    assert torch.isnan(y[::4]).all()
    assert torch.equal(torch.signbit(y[1::4]), torch.signbit(torch.relu(x[1::4])))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 4097, 400001])
def test_relu_dropout_backward_exact(dtype, n):
    x = inputs((n,), dtype)
    g = inputs((n,), dtype, seed=3)
    y = ops.relu_dropout(x, 0.4, RNG)
    inv = 1.0 / 0.6 if dtype == torch.float64 else float(torch.tensor(1.0 / 0.6, dtype=torch.float32))
    s = (y.double() > 0).double() * inv
    assert_exact(ops.relu_dropout_backward(g, y, 0.4), rounded(g.double() * s, dtype))
    # y > 0 exactly where x > 0 and the element was kept.
    kept = keep_mask(x.shape, 0.4) & (x > 0)
    assert torch.equal(y > 0, kept)


def test_relu_dropout_backward_non_contiguous():
    y = ops.relu_dropout(inputs((40, 30), torch.float32), 0.5, RNG).t()
    g = inputs((40, 30), torch.float32, seed=2).t()
    inv = float(torch.tensor(2.0, dtype=torch.float32))
    assert_exact(ops.relu_dropout_backward(g, y, 0.5).contiguous(), (g * torch.where(y > 0, inv, 0.0)).contiguous())


# -- dropout_add ------------------------------------------------------------------------------


def assert_add_close(y, x, hs):
    """y = x + hs to about one rounding of y's dtype, measured against |x| + |hs| (the float64
    reference x + hs rounds too, and cancellation makes a relative error of y meaningless)."""
    eps = {torch.float32: 2.0**-23, torch.float64: 2.0**-52, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[y.dtype]
    x, hs = x.double(), hs.double()
    err = (y.double() - (x + hs)).abs()
    bound = eps * (x.abs() + hs.abs()) + 1e-300
    finite = torch.isfinite(x + hs)
    assert (err[finite] <= bound[finite]).all(), (err - bound).max()
    assert torch.equal(torch.isnan(y), torch.isnan(x + hs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES + [400001])
@pytest.mark.parametrize("p", [0.5, 0.9])
def test_dropout_add(dtype, n, p):
    x = inputs((n,), dtype)
    h = inputs((n,), dtype, seed=1)
    s = scale(h.shape, p, dtype)
    y = ops.dropout_add(x, h, p, RNG)
    assert y.dtype == dtype and y.shape == x.shape
    assert_add_close(y, x, h.double() * s)
    assert_exact(y[s == 0], x[s == 0])  # dropped: x + h * 0 = x


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_add_non_contiguous_and_nan(dtype):
    x = inputs((33, 65), dtype).t()
    h = inputs((65, 33), dtype, seed=1)[:, :]
    h[3, ::4] = float("inf")
    s = scale(h.shape, 0.5, dtype)
    y = ops.dropout_add(x, h, 0.5, RNG)
    assert_add_close(y, x, h.double() * s)
    assert torch.isnan(y[3, ::4][s[3, ::4] == 0]).all()  # inf * 0 where dropped


# -- threads ----------------------------------------------------------------------------------


# keep_prob rounding to 1.0f (all kept), 2^-25 (floor(keep_prob 2^24) = 0: none kept), 2^-24
# (only words below 2^8) and 1 - 2^-24 (all but the top 2^8 words): the ends of the AVX2 kernel's
# integer compare (philox_cpu.h KeepScales), at every level this CPU runs.
@pytest.mark.parametrize("p", [2.0**-30, 1 - 2.0**-25, 1 - 2.0**-24, 2.0**-24, 0.3])
@pytest.mark.parametrize("level", mibcore.cpu_isa.available())
def test_extreme_keep_probabilities_at_every_level(p, level):
    x = inputs((4099,), torch.float32)
    mask = keep_mask(x.shape, p)
    expected = rounded(x.double() * scale(x.shape, p, torch.float32), torch.float32)
    with mibcore.cpu_isa.use(level):
        assert_exact(ops.dropout(x, p, RNG), expected)
        assert_exact(ops.dropout_add(x, x, p, RNG), rounded(x.double() + x.double() * scale(x.shape, p, torch.float32),
                                                             torch.float32))
        relu = rounded(x.double().clamp(min=0) * scale(x.shape, p, torch.float32), torch.float32)
        assert_exact(ops.relu_dropout(x, p, RNG), relu)
    if p == 2.0**-30:
        assert mask.all()
    if p == 1 - 2.0**-25:
        assert not mask.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_counts_agree(dtype):
    x = inputs((400001,), dtype)
    h = inputs((400001,), dtype, seed=1)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = ops.relu_dropout(x, 0.5, RNG)
            results.append((ops.dropout(x, 0.5, RNG), ops.dropout_add(x, h, 0.5, RNG), y,
                            ops.relu_dropout_backward(h, y, 0.5)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert_exact(a, b)


# -- argument checks --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_p_range(p):
    x = torch.randn(8)
    for call in (lambda: ops.dropout(x, p, RNG), lambda: ops.relu_dropout(x, p, RNG),
                 lambda: ops.dropout_add(x, x, p, RNG), lambda: ops.relu_dropout_backward(x, x, p)):
        with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
            call()


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_dtype_rejected(dtype):
    x = torch.zeros(8, dtype=dtype)
    with pytest.raises(TypeError, match="dropout: x must be float32, float64, float16 or bfloat16"):
        ops.dropout(x, 0.5, RNG)
    with pytest.raises(TypeError, match="relu_dropout_backward: y must be float32"):
        ops.relu_dropout_backward(x, x, 0.5)


def test_rng_checks():
    x = torch.randn(8)
    with pytest.raises(TypeError, match="dropout: rng must be an int64 tensor"):
        ops.dropout(x, 0.5, RNG.int())
    with pytest.raises(ValueError, match=r"relu_dropout: rng must have shape \[2\]"):
        ops.relu_dropout(x, 0.5, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"dropout_add: rng must have shape \[2\]"):
        ops.dropout_add(x, x, 0.5, RNG.reshape(1, 2))


def test_pair_checks():
    x = torch.randn(8)
    with pytest.raises(ValueError, match="dropout_add: h must have x's shape"):
        ops.dropout_add(x, torch.randn(9), 0.5, RNG)
    with pytest.raises(TypeError, match="dropout_add: h must have x's dtype"):
        ops.dropout_add(x, x.double(), 0.5, RNG)
    with pytest.raises(ValueError, match="relu_dropout_backward: grad_y must have y's shape"):
        ops.relu_dropout_backward(torch.randn(4), x, 0.5)
    with pytest.raises(TypeError, match="relu_dropout_backward: grad_y must have y's dtype"):
        ops.relu_dropout_backward(x.half(), x, 0.5)


# -- CUDA: the same numbers as the CPU kernels (skipped without a device) ----------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 4097, 400001])
def test_cuda_matches_cpu(dtype, n):
    x = inputs((n,), dtype)
    h = inputs((n,), dtype, seed=1)
    xc, hc, rc = x.cuda(), h.cuda(), RNG.cuda()
    for p in (0.5, 0.9):
        assert_exact(ops.dropout(xc, p, rc).cpu(), ops.dropout(x, p, RNG))
        assert_exact(ops.dropout_add(xc, hc, p, rc).cpu(), ops.dropout_add(x, h, p, RNG))
        y = ops.relu_dropout(x, p, RNG)
        assert_exact(ops.relu_dropout(xc, p, rc).cpu(), y)
        assert_exact(ops.relu_dropout_backward(hc, y.cuda(), p).cpu(), ops.relu_dropout_backward(h, y, p))
    assert_exact(ops.dropout(xc[1:], 0.5, rc).cpu(), ops.dropout(x[1:], 0.5, RNG))  # unaligned: scalar path
