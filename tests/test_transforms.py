"""Transforms the fused operators have no rule for: forward-mode AD (torch.func.jvp,
torch.autograd.forward_ad) and torch.func.grad / vmap. On every fused backend, a call under one
of them is refused with the operator's name and what to do (the reference backend), before any
rng draw; before, triton silently returned zero tangents (or none), and the errors spoke of an
autograd.Function the user never wrote, or of a "random operation" for calls that draw nothing.
The reference backend, which the error recommends, runs them."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from mibcore import backends
from mibcore.ops import SPECS
from tests import utils


def _forward_ad(fn, leaves):
    with fwAD.dual_level():
        outputs = utils.as_tuple(fn(*[fwAD.make_dual(x, torch.ones_like(x)) for x in leaves]))
        return [fwAD.unpack_dual(o).tangent for o in outputs]


TRANSFORMS = {
    "torch.func.jvp": lambda fn, leaves: torch.func.jvp(fn, tuple(leaves), tuple(torch.ones_like(x) for x in leaves)),
    "forward-mode AD": _forward_ad,
    "torch.func.grad": lambda fn, leaves: torch.func.grad(lambda *xs: utils.as_tuple(fn(*xs))[0].sum())(*leaves),
    "torch.func.vmap": lambda fn, leaves: torch.func.vmap(fn)(*[x[None] for x in leaves]),
}
CASES = utils.once_per_backend([(op, b) for op in SPECS for b in utils.backends(op, fused=True)])


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("op, backend", CASES)
def test_fused_backends_refuse_transforms_clearly(op, backend, transform):
    leaves, fn = SPECS[op].double_backward()
    leaves = [x.detach() for x in leaves]
    with backends.use(backend), pytest.raises(
        NotImplementedError,
        match=rf"mibcore.functional.{op}: the '{backend}' backend's fused operator does not support "
              rf"{transform}.*use the 'reference' backend",
    ):
        TRANSFORMS[transform](fn, leaves)


@pytest.mark.parametrize("op", list(SPECS))
def test_the_reference_backend_runs_forward_mode_ad(op):
    leaves, fn = SPECS[op].double_backward()
    with backends.use("reference"):
        tangents = _forward_ad(fn, [x.detach() for x in leaves])
    assert all(t is not None and torch.isfinite(t).all() for t in tangents)
