"""Fused low_rank_fusion (LMF) against the float64 reference."""
import pytest
import torch

import mibcore
from mibcore import functional as MF

FUSED = [b for b in ("cpu",) if b in mibcore.backends.available("cpu")]
pytestmark = pytest.mark.skipif(not FUSED, reason="no fused low_rank_fusion backend built")


def make(batch, dims, out, rank, dtype=torch.float64, flat=False):
    inputs = [torch.randn(batch, d, dtype=dtype, requires_grad=True) for d in dims]
    factors = [torch.randn(rank, d + 1, out, dtype=dtype, requires_grad=True) for d in dims]
    w = torch.randn(rank if flat else (1, rank), dtype=dtype, requires_grad=True)
    b = torch.randn(out if flat else (1, out), dtype=dtype, requires_grad=True)
    return inputs, factors, w, b


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dims", [(1, 7), (7, 1, 50), (50, 63), (3, 2, 4)])
@pytest.mark.parametrize("batch", [1, 3, 257])
@pytest.mark.parametrize("rank, out", [(1, 1), (5, 50), (3, 7)])
@pytest.mark.parametrize("flat", [False, True])
def test_matches_reference_float64(backend, dims, batch, rank, out, flat):
    inputs, factors, w, b = make(batch, dims, out, rank, flat=flat)
    tensors = [*inputs, *factors, w, b]
    with mibcore.backends.use(backend):
        y = MF.low_rank_fusion(inputs, factors, w, b)
    with mibcore.backends.use("reference"):
        y_ref = MF.low_rank_fusion(inputs, factors, w, b)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    grad_y = torch.randn_like(y)
    for g, g_ref in zip(torch.autograd.grad(y, tensors, grad_y), torch.autograd.grad(y_ref, tensors, grad_y)):
        assert g.shape == g_ref.shape
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", FUSED)
def test_float32_bf16_gradcheck_opcheck_compile(backend):
    inputs, factors, w, b = make(4, (3, 5, 2), 6, 3, dtype=torch.float32)
    with mibcore.backends.use(backend):
        y = MF.low_rank_fusion(inputs, factors, w, b)
        y64 = mibcore.reference.low_rank_fusion([x.double() for x in inputs], [f.double() for f in factors],
                                                w.double(), b.double())
        torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert MF.low_rank_fusion(inputs, factors, w, b).dtype == torch.bfloat16
        d = make(2, (2, 3), 2, 2)
        assert torch.autograd.gradcheck(lambda *a: MF.low_rank_fusion(list(a[:2]), list(a[2:4]), a[4], a[5]),
                                        (*d[0], *d[1], d[2], d[3]))
        compiled = torch.compile(lambda *a: MF.low_rank_fusion(a[0], a[1], a[2], a[3]), fullgraph=True,
                                 backend="aot_eager")
        torch.testing.assert_close(compiled(inputs, factors, w, b), y)
    torch.library.opcheck(torch.ops.mibcore.low_rank_fusion.default, (inputs, factors, w, b))
    torch.library.opcheck(torch.ops.mibcore.low_rank_fusion_backward.default,
                          (torch.randn(4, 6), [x.detach() for x in inputs], [f.detach() for f in factors], w.detach()))
