"""Second derivatives: correct on the reference backend (gradgradcheck), a clear error on the
fused backends, whose backward kernels have no autograd of their own (before, a gradient
penalty through them silently came out with zero second derivatives)."""
import pytest
import torch

import mibcore
from mibcore import functional as MF
from tests import utils


def _inputs(op):
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_()  # noqa: E731
    if op == "reparameterize_kl":
        return (r(3, 4), r(3, 4)), lambda mu, s: MF.reparameterize_kl(mu, s, sample=False)[1]
    if op == "tensor_fusion":
        return (r(3, 2), r(3, 3), r(2, 12)), lambda a, b, w: MF.tensor_fusion([a, b], w)
    if op == "low_rank_fusion":
        return (r(3, 2), r(3, 3), r(2, 3, 4), r(2, 4, 4), r(2), r(4)), (
            lambda a, b, fa, fb, w, bias: MF.low_rank_fusion([a, b], [fa, fb], w, bias))
    if op == "dropout":
        return (r(3, 5),), lambda x: MF.dropout(x, 0.5, generator=torch.Generator().manual_seed(1))
    if op == "dropout_add":
        return (r(3, 5), r(3, 5)), lambda x, h: MF.dropout_add(x, h, 0.5, generator=torch.Generator().manual_seed(1))
    return (r(3, 5),), lambda x: MF.relu_dropout(x, 0.5, generator=torch.Generator().manual_seed(1))


OPS = ("reparameterize_kl", "tensor_fusion", "low_rank_fusion", "dropout", "dropout_add", "relu_dropout")
FUSED = [(op, b) for op in OPS for b in utils.backends(op, fused=True)]


@pytest.mark.parametrize("op", ("reparameterize_kl", "tensor_fusion", "low_rank_fusion"))
def test_reference_second_derivatives_are_correct(op):
    args, fn = _inputs(op)
    with mibcore.backends.use("reference"):
        assert torch.autograd.gradgradcheck(fn, args)


@pytest.mark.parametrize("op, backend", FUSED)
def test_fused_double_backward_is_a_clear_error(op, backend):
    args, fn = _inputs(op)
    with mibcore.backends.use(backend):
        out = fn(*args)
        with pytest.raises(RuntimeError, match="double backward .* is not supported"):
            torch.autograd.grad(out.sum(), args[0], create_graph=True)
        # A plain backward still works.
        (grad,) = torch.autograd.grad(fn(*args).sum(), args[0])
    assert torch.isfinite(grad).all()
