"""The dropout operators (dropout, dropout_add, relu_dropout) on every backend that serves CPU
tensors here, against float64 formulas with the keep mask predicted exactly: from the Philox
mirror (tests/philox.py) for the fused backends, from torch's Bernoulli draw for the
reference."""
import pytest
import torch

import mibcore
from mibcore import functional as MF
from tests import utils
from tests.utils import DTYPES

OPS = ("dropout", "dropout_add", "relu_dropout")
BACKENDS = utils.backends("dropout")
FUSED = utils.backends("dropout", fused=True)
SHAPES = [(1,), (3, 7), (33, 257), (2, 3, 5), (4, 1001)]


def call(op, x, h, p, **kwargs):
    if op == "dropout":
        return MF.dropout(h, p, **kwargs)
    if op == "dropout_add":
        return MF.dropout_add(x, h, p, **kwargs)
    return MF.relu_dropout(h, p, **kwargs)


def predicted_keep(backend, h, p, seed):
    """The keep mask `backend` draws for a torch.Generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    if backend == "reference":
        return torch.empty_like(h).bernoulli_(1.0 - p, generator=generator).bool()
    return utils.predicted_keep(h.shape, p, seed=seed)


def expected(op, x, h, keep, p):
    """The float64 result given the keep mask."""
    h = h.double()
    if op == "relu_dropout":
        h = torch.relu(h)
    y = h * keep.double() / (1.0 - p)
    return x.double() + y if op == "dropout_add" else y


def make(shape, dtype, requires_grad=False):
    x = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)
    h = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)
    return x, h


def run(backend, op, x, h, p, seed=7):
    with mibcore.backends.use(backend):
        return call(op, x, h, p, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_forward_is_the_predicted_mask(backend, op, shape, p):
    x, h = make(shape, torch.float32)
    y = run(backend, op, x, h, p)
    keep = predicted_keep(backend, h, p, 7)
    assert y.shape == h.shape and y.dtype == h.dtype
    utils.assert_close(y, expected(op, x, h, keep, p), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_gradients(backend, op, dtype):
    p = 0.3
    x, h = make((5, 19), dtype, requires_grad=True)
    y = run(backend, op, x, h, p)
    keep = predicted_keep(backend, h.detach(), p, 7)
    assert y.dtype == dtype
    utils.assert_close(y, expected(op, x.detach(), h.detach(), keep, p), dtype)
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    grad_h = grad_y.double() * keep.double() / (1.0 - p)
    if op == "relu_dropout":
        grad_h = grad_h * (h.detach() > 0).double()
    utils.assert_close(h.grad, grad_h, dtype)
    if op == "dropout_add":
        assert torch.equal(x.grad, grad_y)


def test_keep_fraction_is_one_minus_p():
    keep = utils.predicted_keep((400_000,), 0.3, rng=torch.tensor([3, 4]))
    # 5 standard deviations of a binomial(400000, 0.7) fraction.
    assert abs(keep.double().mean().item() - 0.7) < 5 * (0.7 * 0.3 / 400_000) ** 0.5


@pytest.mark.skipif(len(FUSED) < 2, reason="needs two fused backends (cpu and triton)")
@pytest.mark.parametrize("op", OPS)
def test_fused_backends_drop_the_same_elements(op):
    x, h = make((33, 257), torch.float32)
    results = [run(backend, op, x, h, 0.5) for backend in FUSED]
    for y in results[1:]:
        assert torch.equal(y, results[0])


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(backend, op):
    x, h = make((3, 5), torch.float64, requires_grad=True)
    if op == "relu_dropout":  # keep away from relu's kink, where finite differences are wrong
        h.data = torch.where(h.data.abs() < 0.1, h.data + 0.3, h.data)
    assert torch.autograd.gradcheck(lambda a, b: run(backend, op, a, b, 0.4), (x, h))


@pytest.mark.parametrize("backend", FUSED)
def test_opcheck(backend):
    x, h = make((4, 9), torch.float32, requires_grad=True)
    rng = torch.tensor([123, 456])
    dropout = mibcore.backends.implementation("dropout", backend)
    torch.library.opcheck(dropout, (h, 0.25, rng))
    torch.library.opcheck(mibcore.backends.implementation("dropout_add", backend), (x, h, 0.25, rng))
    relu_dropout = mibcore.backends.implementation("relu_dropout", backend)
    torch.library.opcheck(relu_dropout, (h, 0.25, rng))
    backward = getattr(torch.ops.mibcore, relu_dropout._schema.name.split("::")[1] + "_backward").default
    torch.library.opcheck(backward, (torch.randn(4, 9), relu_dropout(h.detach(), 0.25, rng), 0.25))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_torch_compile_fullgraph(backend, op):
    x, h = make((6, 10), torch.float32, requires_grad=True)

    def loss_fn(a, b):
        return (call(op, a, b, 0.5) ** 2).sum()

    torch._dynamo.reset()  # the backend is resolved once per compiled graph: no graph of another test
    with mibcore.backends.use(backend):
        compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
        torch.manual_seed(2)
        loss = compiled(x, h)
        torch.manual_seed(2)
        eager = loss_fn(x, h)
    torch.testing.assert_close(loss, eager)
    loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


@pytest.mark.parametrize("backend", FUSED)
def test_non_contiguous_input_uses_the_logical_index(backend):
    h = torch.randn(7, 11).t()  # [11, 7], not contiguous
    y = run(backend, "dropout", None, h, 0.5)
    keep = predicted_keep(backend, h.contiguous(), 0.5, 7)
    utils.assert_close(y, expected("dropout", None, h, keep, 0.5), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inf_and_nan_propagate_as_torch_dropout(backend):
    h = torch.full((4, 33), float("inf"))
    h[0] = float("nan")
    y = run(backend, "dropout", None, h, 0.5)
    keep = predicted_keep(backend, h, 0.5, 7)
    assert torch.isnan(y[0]).all()
    assert torch.isinf(y[1:][keep[1:]]).all() and torch.isnan(y[1:][~keep[1:]]).all()  # inf * 0 = NaN


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_identity_in_eval_and_at_p_zero_and_empty(backend, op):
    x, h = make((3, 4), torch.float32)
    identity = expected(op, x, h, torch.ones_like(h, dtype=torch.bool), 0.0)
    with mibcore.backends.use(backend):
        utils.assert_close(call(op, x, h, 0.5, training=False), identity, torch.float32)
        utils.assert_close(call(op, x, h, 0.0), identity, torch.float32)
        empty = torch.empty(0, 5)
        assert call(op, empty, empty, 0.5).shape == (0, 5)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ({"p": 1.0}, ValueError, r"`p` must be a number in \[0, 1\)"),
        ({"p": -0.1}, ValueError, "`p` must be a number"),
        ({"p": "0.5"}, ValueError, "`p` must be a number"),
        ({"h": torch.ones(3, 4, dtype=torch.int64)}, TypeError, "must be a floating-point tensor"),
        ({"training": 1}, TypeError, "`training` must be a bool"),
        ({"generator": "g"}, TypeError, "`generator` must be a torch.Generator"),
    ],
)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_argument(backend, op, args, error, match):
    kwargs = {"x": torch.zeros(3, 4), "h": torch.zeros(3, 4), "p": 0.5, "training": True, "generator": None}
    kwargs.update(args)
    x, h, p = kwargs.pop("x"), kwargs.pop("h"), kwargs.pop("p")
    with mibcore.backends.use(backend), pytest.raises(error, match=match):
        call(op, x, h, p, **kwargs)


def test_dropout_add_checks_x_against_h():
    with pytest.raises(ValueError, match="`x` must have the shape of `h`"):
        MF.dropout_add(torch.zeros(3, 5), torch.zeros(3, 4), 0.5)


def test_modules_are_drop_ins():
    for module in (mibcore.nn.Dropout(0.5), mibcore.nn.ReLUDropout(0.5)):
        x = torch.randn(8, 16)
        assert not torch.equal(module(x), x)
        module.eval()
        assert torch.equal(module(x), x if isinstance(module, mibcore.nn.Dropout) else torch.relu(x))
    add = mibcore.nn.DropoutAdd(0.2).eval()
    x, h = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(add(x, h), x + h)
    with pytest.raises(ValueError, match="`p` must be a number"):
        mibcore.nn.Dropout(1.5)
