"""tensor_fusion and low_rank_fusion (reference backend) against independent formulas."""
import itertools

import pytest
import torch

import mibcore
from mibcore import functional as MF


@pytest.fixture(autouse=True)
def _reference_backend():
    # This file tests the reference backend (the fused ones have their own files).
    with mibcore.backends.use("reference"):
        yield


def mmsa_style_outer(a, v, t):
    """The TFN code of MMSA / the MIB repo, with bmm and views (audio, video, text order)."""
    B = a.shape[0]
    one = torch.ones(B, 1, dtype=a.dtype)
    _a, _v, _t = (torch.cat([one, x], dim=1) for x in (a, v, t))
    fusion = torch.bmm(_a.unsqueeze(2), _v.unsqueeze(1)).view(B, -1, 1)
    return torch.bmm(fusion, _t.unsqueeze(1)).view(B, -1)


def explicit_outer(inputs):
    """Element by element: index = row-major over (1 + d_i), first input most significant."""
    B = inputs[0].shape[0]
    dims = [x.shape[1] + 1 for x in inputs]
    out = torch.empty(B, torch.tensor(dims).prod().item(), dtype=torch.float64)
    padded = [torch.cat([torch.ones(B, 1, dtype=torch.float64), x.double()], 1) for x in inputs]
    for flat, idx in enumerate(itertools.product(*[range(d) for d in dims])):
        value = torch.ones(B, dtype=torch.float64)
        for x, i in zip(padded, idx):
            value = value * x[:, i]
        out[:, flat] = value
    return out


@pytest.mark.parametrize("dims", [(1, 7), (3, 2, 4), (5, 1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_tensor_fusion_matches_explicit_outer_product(dims, bias):
    B, out = 3, 4
    inputs = [torch.randn(B, d, dtype=torch.float64) for d in dims]
    fused_dim = int(torch.tensor([d + 1 for d in dims]).prod())
    weight = torch.randn(out, fused_dim, dtype=torch.float64)
    b = torch.randn(out, dtype=torch.float64) if bias else None
    y = MF.tensor_fusion(inputs, weight, b)
    expected = explicit_outer(inputs) @ weight.t() + (b if bias else 0)
    torch.testing.assert_close(y, expected)


def test_flatten_order_is_the_papers_tfn_code():
    a, v, t = torch.randn(4, 3), torch.randn(4, 5), torch.randn(4, 2)
    torch.testing.assert_close(mibcore.reference.outer_product([a, v, t]), mmsa_style_outer(a, v, t))


def test_tensor_fusion_dropout_is_inverted_and_reproducible():
    inputs = [torch.randn(64, 6), torch.randn(64, 5)]
    weight = torch.eye(42)  # y = the dropped outer product itself
    y1 = MF.tensor_fusion(inputs, weight, dropout=0.5, generator=torch.Generator().manual_seed(1))
    y2 = MF.tensor_fusion(inputs, weight, dropout=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y1, y2)
    full = mibcore.reference.outer_product(inputs)
    kept = y1 != 0
    assert 0.4 < kept.float().mean() < 0.6
    torch.testing.assert_close(y1[kept], 2 * full[kept])  # scaled by 1 / (1 - p)
    eval_y = MF.tensor_fusion(inputs, weight, dropout=0.5, training=False)
    torch.testing.assert_close(eval_y, full)


def test_tensor_fusion_dropout_is_unbiased():
    inputs = [torch.randn(2, 3), torch.randn(2, 3)]
    weight = torch.randn(5, 16)
    g = torch.Generator().manual_seed(0)
    mean = torch.stack([MF.tensor_fusion(inputs, weight, dropout=0.3, generator=g) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, MF.tensor_fusion(inputs, weight, training=False), rtol=0.1, atol=0.15)


@pytest.mark.parametrize("n_inputs", [2, 3])
def test_low_rank_fusion_equals_tensor_fusion_with_cp_weight(n_inputs):
    # LMF is TFN whose weight is a rank-R CP tensor: W = sum_r w_r (F_1[r] o F_2[r] o ...).
    B, rank, out = 5, 3, 4
    dims = [3, 2, 4][:n_inputs]
    inputs = [torch.randn(B, d, dtype=torch.float64) for d in dims]
    factors = [torch.randn(rank, d + 1, out, dtype=torch.float64) for d in dims]
    rank_weights = torch.randn(1, rank, dtype=torch.float64)
    bias = torch.randn(1, out, dtype=torch.float64)
    weight = torch.zeros(out, *[d + 1 for d in dims], dtype=torch.float64)
    for r in range(rank):
        term = factors[0][r]  # [d0+1, out]
        for f in factors[1:]:
            term = torch.einsum("...o,jo->...jo", term, f[r])
        weight += rank_weights[0, r] * term.movedim(-1, 0)
    y_tfn = MF.tensor_fusion(inputs, weight.reshape(out, -1), bias.reshape(-1))
    y_lmf = MF.low_rank_fusion(inputs, factors, rank_weights, bias)
    torch.testing.assert_close(y_lmf, y_tfn)


def test_fusion_gradcheck():
    inputs = [torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    weight = torch.randn(2, 64, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: MF.tensor_fusion(list(a[:3]), a[3]), (*inputs, weight))
    factors = [torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    w = torch.randn(2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: MF.low_rank_fusion(list(a[:3]), list(a[3:6]), a[6], a[7]), (*inputs, *factors, w, b)
    )


def test_fusion_torch_compile_fullgraph():
    inputs = [torch.randn(4, 3), torch.randn(4, 2)]
    weight, bias = torch.randn(5, 12), torch.randn(5)
    compiled = torch.compile(lambda x, w, b: MF.tensor_fusion(x, w, b), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(inputs, weight, bias), MF.tensor_fusion(inputs, weight, bias))


def test_empty_batch():
    y = MF.tensor_fusion([torch.zeros(0, 3), torch.zeros(0, 4)], torch.zeros(2, 20))
    assert y.shape == (0, 2)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: MF.tensor_fusion([torch.zeros(2, 3)], torch.zeros(1, 4)), ValueError, "2 or 3 tensors"),
        (lambda: MF.tensor_fusion(torch.zeros(2, 3), torch.zeros(1, 4)), TypeError, "list or tuple"),
        (lambda: MF.tensor_fusion([torch.zeros(2, 3), torch.zeros(3, 3)], torch.zeros(1, 16)), ValueError,
         r"`inputs\[1\]` must be \[B, d\] with B = 2"),
        (lambda: MF.tensor_fusion([torch.zeros(2, 3), torch.zeros(2, 3)], torch.zeros(1, 15)), ValueError,
         r"`weight` must be \[out, 16\]"),
        (lambda: MF.tensor_fusion([torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int64)], torch.zeros(1, 16)),
         TypeError, "floating-point"),
        (lambda: MF.tensor_fusion([torch.zeros(2, 3)] * 2, torch.zeros(1, 16), torch.zeros(2)), ValueError,
         r"`bias` must be \[1\]"),
        (lambda: MF.tensor_fusion([torch.zeros(2, 3)] * 2, torch.zeros(1, 16), dropout=1.0), ValueError,
         r"`dropout` must be a number in \[0, 1\)"),
        (lambda: MF.low_rank_fusion([torch.zeros(2, 3)] * 2, [torch.zeros(2, 4, 5), torch.zeros(2, 3, 5)],
                                    torch.zeros(2), torch.zeros(5)), ValueError, r"`factors\[1\]` must be"),
        (lambda: MF.low_rank_fusion([torch.zeros(2, 3)] * 2, [torch.zeros(2, 4, 5)] * 2,
                                    torch.zeros(3), torch.zeros(5)), ValueError, "`rank_weights` must be"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
