"""The benchmarks' baseline (benchmarks/paper_model.py) is the paper's formulation: it has the
paper's parameter count, mibcore's C-MIB computes the same function with its weights, its KL is
the closed form, and a seeded training step runs."""
import pytest
import torch

from benchmarks.paper_model import PaperCMIB, TensorFusionHead
from mibcore import models
from mibcore.reference.fusion import outer_product

SHAPES = dict(B=4, T=6)


def _batch(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, n, generator=g) for n in (768, 74, 47)], torch.randn(B, generator=g)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_is_the_papers():
    # Table XI: C-MIB 109,835,748 with BERT-base without pooler (108,891,648), concat fusion.
    assert _count(PaperCMIB("concat")) == 109_835_748 - 108_891_648
    # mibcore fuses fc_mu|fc_std into one Linear of the same size: counts are equal.
    assert _count(PaperCMIB("concat")) == _count(models.build("cmib", fusion="concat"))
    # mibcore's tensor head is the paper's three layers, under the paper's names.
    assert _count(PaperCMIB("tensor")) == _count(models.build("cmib", fusion="tensor"))
    models.build("cmib", fusion="tensor").fusion.load_state_dict(TensorFusionHead().state_dict())


def _load_mibcore_weights(paper, mib):
    """Copies mibcore's C-MIB (concat) weights into the paper layout."""
    mods = {"text": "l", "audio": "a", "visual": "v"}
    src = mib.state_dict()
    dst = {}
    for name, value in src.items():
        new = name
        for m, s in mods.items():
            new = new.replace(f"proj.{m}.conv.", f"proj_{s}.").replace(f"encoders.{m}.", f"trans_{s}.")
            new = new.replace(f"unimodal_ib.{m}.", f"ib_{s}.").replace(f"unimodal_dec.{m}.", f"decoder_{s}.")
        new = (new.replace(".attn.", ".self_attn.").replace("norm_attn", "layer_norms.0")
               .replace("norm_ffn", "layer_norms.1").replace("fused_ib.", "ib."))
        if new.endswith(".norm.weight") or new.endswith(".norm.bias"):
            new = new.replace(".norm.", ".layer_norm.")
        if ".heads." in new:
            mu, std = value.chunk(2)
            dst[new.replace(".heads.", ".fc_mu.")] = mu
            dst[new.replace(".heads.", ".fc_std.")] = std
        else:
            dst[new] = value
    paper.load_state_dict(dst)  # strict: every parameter mapped, none left over


def test_same_function_as_mibcore_with_its_weights(monkeypatch):
    torch.manual_seed(0)
    mib = models.build("cmib", fusion="concat", mode="clean").eval()  # eval: no dropout, z = mu
    paper = PaperCMIB("concat").eval()
    _load_mibcore_weights(paper, mib)
    (t, a, v), y = _batch(**SHAPES)
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # the paper samples in eval: z = mu here
    with torch.no_grad():
        ours, theirs = mib(t, a, v), paper(t, a, v)
    torch.testing.assert_close(theirs["pred"], ours["pred"], rtol=1e-4, atol=1e-5)
    for m in ("text", "audio", "visual"):
        torch.testing.assert_close(theirs["unimodal_pred"][m], ours["unimodal_pred"][m], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack(theirs["kl"]), torch.stack(ours["kl"]), rtol=1e-4, atol=1e-5)


def test_kl_is_the_closed_form():
    paper = PaperCMIB("concat")
    head = paper.ib
    x = torch.randn(8, 50)
    _, kl = head(x)
    h = torch.relu(head.encoder(x))
    mu, std = head.fc_mu(h), torch.nn.functional.softplus(head.fc_std(h) - 5)
    closed = torch.distributions.kl_divergence(torch.distributions.Normal(mu, std), torch.distributions.Normal(0, 1))
    torch.testing.assert_close(kl, closed.mean())  # mean over batch and latent dims, as the paper


def test_tensor_head_flattens_as_mibcore():
    head = TensorFusionHead(d=3, dropout=0.0)
    xs = [torch.randn(2, 3) for _ in range(3)]
    captured = {}
    head.post_fusion_layer_1.register_forward_pre_hook(lambda mod, args: captured.update(x=args[0]))
    head(*xs)
    torch.testing.assert_close(captured["x"], outer_product(xs))


@pytest.mark.parametrize("fusion", ["concat", "tensor"])
def test_seeded_training_step(fusion):
    def step():
        torch.manual_seed(3)
        model = PaperCMIB(fusion, d=10, hidden=16)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        (t, a, v), y = _batch(**SHAPES)
        loss = model.loss(model(t, a, v), y)
        loss.backward()
        before = model.decoder.weight.detach().clone()
        optimizer.step()
        return loss.detach(), before, model.decoder.weight.detach()

    loss, before, after = step()
    assert torch.isfinite(loss) and not torch.equal(before, after)
    torch.testing.assert_close(step()[0], loss, rtol=0, atol=0)  # seeded: the same step twice
