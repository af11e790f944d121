"""Bad arguments to modules and functional ops: a clear error naming the argument, never a
crash in the middle or a silently accepted nonsense value."""
import itertools

import numpy as np
import pytest
import torch

import mibcore
from mibcore import functional as MF
from mibcore import nn as mnn


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: mnn.TensorFusion(-1, 4), "`in_features` must be a positive int"),
        (lambda: mnn.TensorFusion(4, 4, dropout=1.5), r"`dropout` must be a number in \[0, 1\)"),
        (lambda: mnn.TensorFusion(4, 4, n_inputs=1), "fuses 2 or 3 inputs, got 1"),
        (lambda: mnn.TensorFusion(4, 4, n_inputs=4), "fuses 2 or 3 inputs, got 4"),
        (lambda: mnn.TensorFusion(4, 0), "`out_features` must be a positive int"),
        (lambda: mnn.LowRankFusion(4, 4, rank=0), "`rank` must be a positive int"),
        (lambda: mnn.LowRankFusion([3, 4, 5, 6], 4), "fuses 2 or 3 inputs, got 4"),
        (lambda: mnn.ConcatFusion(0, 3), "`in_features` must be a positive int"),
        (lambda: mnn.ConcatFusion(3, 3, n_inputs=0), "`n_inputs` must be a positive int"),
        (lambda: mnn.GraphFusion(True, 3), "`in_features` must be a positive int"),
    ],
)
def test_fusion_modules_refuse_nonsense(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_numpy_scalars_are_numbers():
    assert mnn.TensorFusion(4, 4, dropout=np.float32(0.25)).dropout == 0.25
    mu = torch.zeros(2, 3)
    z, kl = MF.reparameterize_kl(mu, mu, shift=np.float64(-5.0), sample=False)
    assert torch.equal(z, mu)


def test_poe_needs_one_std_per_expert():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"`stds` must hold one std per input \(3\), got 2"):
        mnn.PoEFusion()([x, x, x], [x + 1, x + 1])


def test_poe_precisions_do_not_overflow_in_fp16():
    # 1 / 0.003^2 = 111111 > 65504: an fp16 precision sum overflowed (std 0.0067 gave 0, 0.003 NaN).
    mus = [torch.full((2, 3), v, dtype=torch.float16) for v in (1.0, 3.0)]
    for std in (0.0067, 0.003):
        stds = [torch.full((2, 3), std, dtype=torch.float16)] * 2
        out = mnn.PoEFusion()(mus, stds)
        assert out.dtype == torch.float16
        expected = mnn.PoEFusion()([m.float() for m in mus], [s.float() for s in stds])
        torch.testing.assert_close(out.float(), expected, rtol=1e-3, atol=1e-3)
        assert torch.isfinite(out).all() and (out > 1.5).all()


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_fusion_inputs_of_the_wrong_rank_name_the_input(backend):
    if backend not in mibcore.backends.available("cpu"):
        pytest.skip("needs the cpu backend")
    with mibcore.backends.use(backend):
        with pytest.raises(ValueError, match=r"`inputs\[0\]` must be \[B, d\] \(2 dimensions\), got shape \[\]"):
            MF.tensor_fusion([torch.tensor(1.0), torch.zeros(2, 3)], torch.zeros(1, 8))
        with pytest.raises(ValueError, match=r"`inputs\[1\]` must be \[B, d\] \(2 dimensions\)"):
            MF.low_rank_fusion([torch.zeros(2, 3), torch.zeros(3)], [torch.zeros(1, 4, 2)] * 2, torch.ones(1),
                               torch.zeros(2))


def test_generator_of_the_wrong_type_names_the_argument():
    inputs = [torch.zeros(2, 3), torch.zeros(2, 3)]
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator or None, got str"):
        MF.tensor_fusion(inputs, torch.zeros(1, 16), dropout=0.5, generator="g")


@pytest.mark.skipif("cpu" not in mibcore.backends.available("cpu"), reason="needs the cpu backend")
def test_cpp_operators_refuse_bad_shapes_and_sizes():
    inputs = [torch.randn(3, 2), torch.randn(3, 4)]
    factors = [torch.randn(2, 3, 5), torch.randn(2, 5, 5)]
    with pytest.raises(ValueError, match=r"grad_y must be \[B, out\] = \[3, 5\]"):
        torch.ops.mibcore.low_rank_fusion_backward(torch.randn(2, 2), inputs, factors, torch.ones(2))
    with pytest.raises(TypeError, match="floating point"):
        torch.ops.mibcore.low_rank_fusion([x.long() for x in inputs], [f.long() for f in factors],
                                          torch.ones(2).long(), torch.zeros(5).long())
    huge = torch.empty_strided((1, 2**40), (0, 0))  # sizes whose product wraps around int64
    with pytest.raises(ValueError, match="2\\^63 columns or more"):
        torch.ops.mibcore.tensor_fusion([huge, huge, huge], torch.empty(1, 1), None, 0.0, torch.tensor([1, 2]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"heads": 0}, "`heads` must be a positive int"),
        ({"beta": -1.0}, "`beta` must be >= 0"),
        ({"beta": float("nan")}, "`beta` must be a finite number"),
        ({"output_dim": 0}, "`output_dim` must be a positive int"),
        ({"attn_dropout": 2.0}, r"`attn_dropout` must be a number in \[0, 1\)"),
        ({"no_ib": "text"}, r"no_ib must be a sequence of modality names, e.g. \('text',\)"),
    ],
)
def test_model_build_refuses_nonsense(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mibcore.models.build("cmib", **kwargs)


def test_bottleneck_sizes_are_ints_not_bools():
    with pytest.raises(ValueError, match="in_features must be a positive int, got True"):
        mnn.VariationalBottleneck(True, 5)


@pytest.mark.parametrize("op", ["tensor_fusion", "low_rank_fusion"])
def test_zero_width_inputs_are_refused_on_every_backend(op):
    # d_i = 0 gave wrong results on triton (off by 5.9 for TFN, 0.74 for LMF) and a shape error
    # on the reference: now one clear error everywhere.
    inputs = [torch.zeros(3, 0), torch.zeros(3, 4)]
    for backend in mibcore.backends.available("cpu"):
        with mibcore.backends.use(backend), pytest.raises(ValueError, match=r"`inputs\[0\]` must have at least one"):
            if op == "tensor_fusion":
                MF.tensor_fusion(inputs, torch.zeros(2, 5))
            else:
                MF.low_rank_fusion(inputs, [torch.zeros(2, 1, 3), torch.zeros(2, 5, 3)], torch.ones(2), torch.zeros(3))


def test_every_model_takes_an_empty_batch():
    # B = 0 failed in every model ("cannot reshape tensor of 0 elements"), as torch's modules do not.
    for variant, fusion in itertools.product(mibcore.models.VARIANTS, mibcore.nn.fusion.FUSIONS):
        model = mibcore.models.build(variant, fusion=fusion, text_dim=12, audio_dim=5, visual_dim=4, d=10, hidden=16)
        for training in (True, False):
            out = model.train(training)(torch.randn(0, 7, 12), torch.randn(0, 7, 5), torch.randn(0, 7, 4))
            assert out["pred"].shape == (0, 1), (variant, fusion)


@pytest.mark.parametrize("last_only", [False, True])
def test_multihead_attention_takes_an_empty_batch_as_torch(last_only):
    ours, theirs = mnn.MultiheadAttention(8, 2), torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(0, 5, 8)
    expected = theirs(x[:, -1:] if last_only else x, x, x, need_weights=False)[0]
    assert ours(x, last_only=last_only).shape == expected.shape == (0, 1 if last_only else 5, 8)


@pytest.mark.parametrize("eps", [-1.0, float("nan"), "1e-8", None])
def test_poe_validates_eps(eps):
    with pytest.raises(ValueError, match="PoEFusion: `eps` must be"):
        mnn.PoEFusion(eps=eps)


def test_poe_validates_its_experts_shapes():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"PoEFusion: `inputs\[1\]` must have the shape of `inputs\[0\]` \[2, 3\]"):
        mnn.PoEFusion()([x, torch.zeros(2, 4)])
    with pytest.raises(ValueError, match=r"PoEFusion: `stds\[0\]` must have the shape of `inputs\[0\]`"):
        mnn.PoEFusion()([x, x], [torch.ones(1, 3), torch.ones(2, 3)])
    with pytest.raises(ValueError, match="PoEFusion: `inputs` must hold at least one"):
        mnn.PoEFusion()([])


def test_concat_and_graph_fusion_say_how_many_inputs_they_take():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"ConcatFusion: it was built for 3 inputs of sizes \[3, 3, 3\], got 2"):
        mnn.ConcatFusion(3, 4)([x, x])
    with pytest.raises(ValueError, match=r"ConcatFusion: `inputs\[1\]` must be \[\.\.\., 3\], got shape \[2, 4\]"):
        mnn.ConcatFusion(3, 4, n_inputs=2)([x, torch.zeros(2, 4)])
    for n in (1, 4):
        with pytest.raises(ValueError, match=rf"GraphFusion: it fuses 2 or 3 inputs \[B, 3\], got {n}"):
            mnn.GraphFusion(3, 4)([x] * n)
    with pytest.raises(ValueError, match=r"GraphFusion: `inputs\[2\]` must be \[\.\.\., 3\]"):
        mnn.GraphFusion(3, 4)([x, x, torch.zeros(2, 5)])
