"""MIB models: the paper's parameter counts, every variant x fusion trains, and the switches."""
import dataclasses

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


# With the paper's tensor fusion head instead of concat (Linear(150, 50), 7,550 parameters):
# post_fusion_layer_1 = Linear(51^3, 50) (6,632,600) and two Linear(50, 50) (2 x 2,550).
TENSOR_COUNTS = {"cmib": 7_574_250, "emib": 7_109_925, "lmib": 7_419_526, "plain": 6_955_201}


@pytest.mark.parametrize("variant", list(TENSOR_COUNTS))
def test_tensor_fusion_parameter_counts(variant):
    assert TENSOR_COUNTS[variant] == PAPER_COUNTS[variant] - 7_550 + 51 ** 3 * 50 + 50 + 2 * 2_550
    assert count(models.build(variant, fusion="tensor")) == TENSOR_COUNTS[variant]


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


def test_clean_is_the_default_mode():
    from mibcore.train import TrainConfig

    assert models.MIBConfig().mode == TrainConfig().mode == "clean"


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


# --- Attention, the encoders' dropouts, and the last-position computation ----------------------

import copy  # noqa: E402
import math  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import mibcore  # noqa: E402
from mibcore.models.encoders import TransformerEncoder, sinusoidal_positions  # noqa: E402
from mibcore.nn import MultiheadAttention  # noqa: E402
from tests import utils  # noqa: E402

FUSED = utils.backends("dropout", fused=True)


def grads_of(module):
    return {n: p.grad.clone() for n, p in module.named_parameters()}


def assert_same_grads(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("train_mode", [True, False])
def test_attention_equals_nn_multihead_attention(last_only, train_mode):
    # Dropout off: p = 0 in train mode, or p = 0.5 in eval mode.
    torch.manual_seed(0)
    B, T, d, heads = 3, 7, 10, 5
    theirs = torch.nn.MultiheadAttention(d, heads, batch_first=True).double()
    with torch.no_grad():
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
    ours = MultiheadAttention(d, heads, dropout=0.0 if train_mode else 0.5).double().train(train_mode)
    ours.load_state_dict(theirs.state_dict())  # strict: the same names and shapes
    x = torch.randn(B, T, d, dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    query = y[:, -1:] if last_only else y
    expected = theirs(query, y, y, need_weights=False)[0]
    actual = ours(x, last_only=last_only)
    assert actual.shape == (B, 1 if last_only else T, d)
    torch.testing.assert_close(actual, expected)
    grad = torch.randn_like(expected)
    actual.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, y.grad)
    assert_same_grads(grads_of(ours), grads_of(theirs))


def attention_by_hand(attn, h, query, keep, p):
    """float64 attention of `query` over h [B, T, d] given the probabilities' keep mask."""
    B, T, d = h.shape
    H, hd = attn.num_heads, attn.head_dim
    w, b = attn.in_proj_weight, attn.in_proj_bias
    split = lambda t: t.reshape(B, -1, H, hd).transpose(1, 2).reshape(B * H, -1, hd)  # noqa: E731
    q, k, v = split(F.linear(query, w[:d], b[:d])), split(F.linear(h, w[d:2 * d], b[d:2 * d])), \
        split(F.linear(h, w[2 * d:], b[2 * d:]))
    probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1) * keep / (1 - p)
    out = (probs @ v).reshape(B, H, -1, hd).transpose(1, 2).reshape(B, -1, d)
    return attn.out_proj(out)


def keep_mask(shape, p):
    """The keep mask of the next dropout call on the default generator (and draws its rng)."""
    return utils.predicted_keep(shape, p).double()


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("last_only", [False, True])
def test_attention_dropout_is_the_philox_mask(backend, last_only):
    torch.manual_seed(0)
    B, T, d, heads, p = 3, 6, 10, 2, 0.5
    attn = MultiheadAttention(d, heads, dropout=p).double()
    x = torch.randn(B, T, d, dtype=torch.float64, requires_grad=True)
    with mibcore.backends.use(backend):
        torch.manual_seed(5)
        actual = attn(x, last_only=last_only)
    Tq = 1 if last_only else T
    torch.manual_seed(5)
    keep = keep_mask((B * heads, Tq, T), p)
    assert 0 < keep.mean() < 1
    expected = attention_by_hand(attn, x, x[:, -1:] if last_only else x, keep, p)
    torch.testing.assert_close(actual, expected)
    actual.sum().backward()
    ours = grads_of(attn), x.grad.clone()
    attn.zero_grad(), x.grad.zero_()
    expected.sum().backward()
    assert_same_grads(ours[0], grads_of(attn))
    torch.testing.assert_close(ours[1], x.grad)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("last_only", [False, True])
def test_encoder_dropouts_are_the_philox_masks(backend, last_only):
    """Every dropout of the MulT encoder (embedding, attention, residuals, FFN), predicted in the
    order the encoder draws them, against a float64 encoder written out by hand."""
    torch.manual_seed(0)
    B, T, d, heads = 2, 5, 10, 2
    pa, pr, ps, pe = 0.5, 0.3, 0.2, 0.1
    encoder = TransformerEncoder(d, heads, 2, pa, pr, ps, pe, batch_first=True).double()
    x = torch.randn(B, T, d, dtype=torch.float64)
    x[0, 1, 0] = 0  # a "padding" position: no position embedding
    with mibcore.backends.use(backend):
        torch.manual_seed(9)
        actual = encoder(x, last_only=last_only)

    torch.manual_seed(9)
    norm = lambda ln, t: F.layer_norm(t, (d,), ln.weight, ln.bias)  # noqa: E731
    h = math.sqrt(d) * x + (x[:, :, :1] != 0) * sinusoidal_positions(T, d).double()
    h = h * keep_mask(h.shape, pe) / (1 - pe)
    for i, layer in enumerate(encoder.layers):
        last = last_only and i == len(encoder.layers) - 1
        hn = norm(layer.norm_attn, h)
        query = hn[:, -1:] if last else hn
        a = attention_by_hand(layer.attn, hn, query, keep_mask((B * heads, query.shape[1], T), pa), pa)
        h = (h[:, -1:] if last else h) + a * keep_mask(a.shape, ps) / (1 - ps)
        f = torch.relu(layer.fc1(norm(layer.norm_ffn, h)))
        f = layer.fc2(f * keep_mask(f.shape, pr) / (1 - pr))
        h = h + f * keep_mask(f.shape, ps) / (1 - ps)
    expected = norm(encoder.norm, h)
    assert actual.shape == (B, 1 if last_only else T, d)
    torch.testing.assert_close(actual, expected)


class OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("full_sequence", [False, True])
def test_no_bernoulli_in_a_training_step(backend, full_sequence):
    model = small("cmib", "tensor", full_sequence=full_sequence)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    text, audio, visual, label = batch()
    with mibcore.backends.use(backend), OpNames() as ops:
        model.loss(model(text, audio, visual), label).backward()
    assert any("mibcore" in name and "dropout" in name for name in ops.names)
    assert not [name for name in ops.names if "bernoulli" in name]


NO_DROPOUT = dict(attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0, embed_dropout=0.0, tensor_dropout=0.0)


@pytest.mark.parametrize("fusion", ["concat", "tensor"])
@pytest.mark.parametrize("t", [1, 2, 7])
@pytest.mark.parametrize("train_mode", [True, False])
def test_last_position_equals_the_full_computation(fusion, t, train_mode):
    """float64, dropout off (train mode with every dropout 0, or eval mode): outputs and the
    gradients of every parameter equal those of full_sequence=True."""
    torch.manual_seed(0)
    model = small("cmib", fusion, **(NO_DROPOUT if train_mode else {})).double().train(train_mode)
    full = copy.deepcopy(model)
    full.config = dataclasses.replace(model.config, full_sequence=True)
    assert not model.config.full_sequence  # the default
    text, audio, visual, label = (x.double() for x in batch(t=t))
    results, positions = [], []
    for m in (model, full):
        # The positions the text projection and the last layer's FFN compute.
        hooks = [m.proj["text"].register_forward_hook(lambda mod, args, y: positions.append(y.shape[1])),
                 m.encoders["audio"].layers[-1].fc1.register_forward_hook(
                     lambda mod, args, y: positions.append(y.shape[1]))]
        torch.manual_seed(3)  # the bottlenecks' samples
        out = m(text, audio, visual)
        for hook in hooks:
            hook.remove()
        loss = m.loss(out, label)
        loss.backward()
        results.append((out, loss, grads_of(m)))
    assert positions == [1, 1, t, t]
    (out, loss, grads), (out_full, loss_full, grads_full) = results
    torch.testing.assert_close(out["pred"], out_full["pred"])
    for m in out["unimodal_pred"]:
        torch.testing.assert_close(out["unimodal_pred"][m], out_full["unimodal_pred"][m])
    torch.testing.assert_close(torch.stack(out["kl"]), torch.stack(out_full["kl"]))
    torch.testing.assert_close(loss, loss_full)
    assert_same_grads(grads, grads_full)
    assert grads["proj.text.conv.weight"].abs().sum() > 0 and grads["encoders.audio.layers.0.fc1.weight"].abs().sum() > 0


def test_sequences_are_every_position_and_end_in_the_readout():
    torch.manual_seed(0)
    model = small("cmib", "concat").eval()
    text, audio, visual, _ = batch(t=5)
    with torch.no_grad():
        seqs, last = model.sequences(text, audio, visual), model.encode(text, audio, visual)
    for m in models.MODALITIES:
        assert seqs[m].shape == (6, 5, 10)
        torch.testing.assert_close(seqs[m][:, -1], last[m], rtol=1e-5, atol=1e-6)


def test_encoder_keeps_mult_layout_by_default():
    torch.manual_seed(0)
    encoder = TransformerEncoder(10, 2, 2, 0.0, 0.0, 0.0, 0.0)
    x = torch.randn(4, 3, 10)  # [T, B, d]
    batch_first = copy.deepcopy(encoder)
    batch_first.batch_first = True
    torch.testing.assert_close(encoder(x), batch_first(x.transpose(0, 1)).transpose(0, 1))
    torch.testing.assert_close(encoder(x, last_only=True)[0], encoder(x)[-1])


def encoder_by_hand(encoder, x):
    """TransformerEncoder.forward (batch-first, eval) with its positions computed for x's length."""
    not_pad = (x[:, :, :1] != 0).to(x.dtype)
    h = math.sqrt(encoder.dim) * x + not_pad * sinusoidal_positions(x.shape[1], encoder.dim).to(x.dtype)
    for layer in encoder.layers:
        h = layer(h)
    return encoder.norm(h)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_positions_are_bit_identical_and_stay_out_of_the_state_dict(dtype):
    from mibcore.models import encoders

    torch.manual_seed(0)
    encoder = TransformerEncoder(10, 2, 2, 0.0, 0.0, 0.0, 0.0, batch_first=True).to(dtype).eval()
    assert "positions" not in encoder.state_dict() and count(encoder) == count(copy.deepcopy(encoder))
    for t in (1, 7, 50, encoders.CACHED_POSITIONS + 3):  # the last one past the cache: computed per forward
        x = torch.randn(3, t, 10, dtype=dtype)
        x[0, -2:] = 0  # padding: no position added
        with torch.no_grad():
            assert torch.equal(encoder(x), encoder_by_hand(encoder, x))
    assert count(models.build("cmib")) == PAPER_COUNTS["cmib"]
    assert not [k for k in models.build("cmib").state_dict() if "positions" in k]


def test_a_forward_computes_no_positions():
    model = small("cmib", "concat").eval()
    text, audio, visual, _ = batch()
    with OpNames() as ops, torch.no_grad():
        model(text, audio, visual)
    assert not [name for name in ops.names if name.split(".")[1] in ("sin", "cos", "exp", "arange")], ops.names
