"""Second derivatives: correct on the reference backend (gradgradcheck), a clear error on the
fused backends, whose backward kernels have no autograd of their own (before, a gradient
penalty through them silently came out with zero second derivatives). The inputs come from
each operator's spec (OpSpec.double_backward)."""
import pytest
import torch

import mibcore
from mibcore.ops import SPECS
from tests import utils

FUSED = [(op, b) for op in SPECS for b in utils.backends(op, fused=True)]
@pytest.mark.parametrize("op", list(SPECS))  # (random ops: a generator seeded in every call)
def test_reference_second_derivatives_are_correct(op):
    args, fn = SPECS[op].double_backward()
    with mibcore.backends.use("reference"):
        assert torch.autograd.gradgradcheck(fn, args)


@pytest.mark.parametrize("op, backend", FUSED)
def test_fused_double_backward_is_a_clear_error(op, backend):
    args, fn = SPECS[op].double_backward()
    with mibcore.backends.use(backend):
        out = fn(*args)
        with pytest.raises(RuntimeError, match="double backward .* is not supported"):
            torch.autograd.grad(out.sum(), args[0], create_graph=True)
        # A plain backward still works.
        (grad,) = torch.autograd.grad(fn(*args).sum(), args[0])
    assert torch.isfinite(grad).all()
