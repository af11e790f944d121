"""MIB models: the paper's parameter counts, every variant x fusion trains, and the switches."""
import pytest
import torch

from mibcore import models
from mibcore.nn import FUSIONS

# Table XI of the paper minus BERT-base without pooler (108,891,648), with 768-d text features,
# 74-d audio, 47-d visual, d = 50 and concat fusion.
PAPER_COUNTS = {"cmib": 944_100, "emib": 479_775, "lmib": 789_376, "plain": 325_051}


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant", list(PAPER_COUNTS))
def test_parameter_counts_match_the_paper(variant):
    assert count(models.build(variant)) == PAPER_COUNTS[variant]


def small(variant, fusion, **kwargs):
    return models.build(variant, fusion=fusion, text_dim=12, audio_dim=5, visual_dim=4, d=10, hidden=16, **kwargs)


def batch(n=6, t=7, output_dim=1):
    g = torch.Generator().manual_seed(0)
    label = torch.randn(n, generator=g) if output_dim == 1 else (torch.rand(n, output_dim, generator=g) > 0.5).float()
    return (torch.randn(n, t, 12, generator=g), torch.randn(n, t, 5, generator=g), torch.randn(n, t, 4, generator=g),
            label)


@pytest.mark.parametrize("variant", models.VARIANTS)
@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_every_variant_and_fusion_trains_a_step(variant, fusion):
    torch.manual_seed(0)
    model = small(variant, fusion)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    text, audio, visual, label = batch()
    out = model(text, audio, visual)
    assert out["pred"].shape == (6, 1)
    loss = model.loss(out, label)
    assert torch.isfinite(loss)
    before = [p.detach().clone() for p in model.parameters()]
    loss.backward()
    optimizer.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert changed > 0
    n_kl = {"plain": 0, "emib": 1, "lmib": 3, "cmib": 4}[variant]
    assert len(out["kl"]) == n_kl


def test_faithful_samples_at_evaluation_clean_does_not():
    torch.manual_seed(0)
    text, audio, visual, _ = batch()
    for mode, deterministic in (("faithful", False), ("clean", True)):
        model = small("cmib", "concat", mode=mode).eval()
        with torch.no_grad():
            a, b = model(text, audio, visual)["pred"], model(text, audio, visual)["pred"]
        assert torch.equal(a, b) == deterministic


def test_faithful_counts_the_final_loss_twice():
    torch.manual_seed(0)
    text, audio, visual, label = batch()
    model = small("plain", "concat", mode="clean").eval()
    out = model(text, audio, visual)
    clean = model.loss(out, label)
    model.config.mode = "faithful"
    torch.testing.assert_close(model.loss(out, label), 2 * clean)


def test_b_mib_and_no_ib_switches():
    text, audio, visual, label = batch()
    model = small("cmib", "concat", beta=0.0)
    out = model(text, audio, visual)
    kl_free = model.loss(out, label)
    model.config.beta = 1.0
    assert model.loss(out, label) > kl_free  # the KL terms are positive
    without_text = small("cmib", "concat", no_ib=("text",))
    assert set(without_text.unimodal_ib) == {"audio", "visual"}
    assert count(without_text) < count(small("cmib", "concat"))
    with pytest.raises(ValueError, match="no_ib names unknown modalities"):
        small("cmib", "concat", no_ib=("smell",))
    with pytest.raises(ValueError, match="variant must be one of"):
        models.build("xmib")
    with pytest.raises(TypeError, match="unknown options"):
        models.build("cmib", hiden=3)


def test_emotion_head_uses_bce():
    torch.manual_seed(0)
    model = small("lmib", "concat", output_dim=6)
    text, audio, visual, label = batch(output_dim=6)
    out = model(text, audio, visual)
    assert out["pred"].shape == (6, 6)
    assert torch.isfinite(model.loss(out, label))


def test_tensor_fusion_module_loads_a_linear_over_the_outer_product():
    from mibcore.nn import TensorFusion

    torch.manual_seed(0)
    linear = torch.nn.Linear(4 * 3 * 5, 2)
    module = TensorFusion([3, 2, 4], 2, dropout=0.0)
    module.load_state_dict(linear.state_dict())
    xs = [torch.randn(5, d) for d in (3, 2, 4)]
    from mibcore.reference import outer_product

    torch.testing.assert_close(module(xs), linear(outer_product(xs)), rtol=1e-5, atol=1e-5)
    assert set(module.state_dict()) == {"weight", "bias"}
