"""The model's fusion heads against the MIB code's modules, written out independently here:
the 3-layer tensor fusion head (per variant, audio-visual-text order), LMF's initialization and
ARGF's six trimodal nodes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mibcore import models
from mibcore.nn import GraphFusion, LowRankFusion, TensorFusionHead

D = 4  # small d: the outer product has (D + 1)^3 = 125 entries
ACTIVATIONS = {"cmib": (torch.tanh, torch.tanh, torch.tanh), "emib": (lambda y: y, torch.tanh, torch.relu),
               "lmib": (lambda y: y, torch.tanh, torch.relu)}


class PaperTensorHead(nn.Module):
    """The MIB code's `tensor` module, dropout off: its three Linears over the materialized product."""

    def __init__(self, d, activations):
        super().__init__()
        self.activations = activations
        self.post_fusion_layer_1 = nn.Linear((d + 1) ** 3, d)
        self.post_fusion_layer_2 = nn.Linear(d, d)
        self.post_fusion_layer_3 = nn.Linear(d, d)

    def forward(self, a, v, t):
        ones = torch.ones(a.shape[0], 1, dtype=a.dtype)
        _a, _v, _t = (torch.cat([ones, x], 1) for x in (a, v, t))
        av = torch.bmm(_a.unsqueeze(2), _v.unsqueeze(1)).reshape(a.shape[0], -1, 1)  # audio most significant
        fused = torch.bmm(av, _t.unsqueeze(1)).reshape(a.shape[0], -1)
        torch.testing.assert_close(fused, torch.einsum("bi,bj,bk->bijk", _a, _v, _t).reshape(a.shape[0], -1))
        f1, f2, f3 = self.activations
        y = f1(self.post_fusion_layer_1(fused))
        return f3(self.post_fusion_layer_3(f2(self.post_fusion_layer_2(y))))


def tiny(variant, fusion, **kwargs):
    return models.build(variant, fusion=fusion, text_dim=6, audio_dim=5, visual_dim=3, d=D, heads=2, hidden=8,
                        **kwargs)


@pytest.mark.parametrize("variant", list(ACTIVATIONS))
def test_tensor_head_loads_the_papers_module_and_computes_it(variant):
    torch.manual_seed(0)
    model = tiny(variant, "tensor", tensor_dropout=0.0).double()  # train mode, dropout off
    head = model.fusion
    assert isinstance(head, TensorFusionHead)
    paper = PaperTensorHead(D, ACTIVATIONS[variant]).double()
    with torch.no_grad():
        for p in paper.parameters():
            p.normal_()  # large enough that tanh and relu are not near-linear
    head.load_state_dict(paper.state_dict())  # strict: the paper's names and shapes
    a, v, t = (torch.randn(5, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours = head([a, v, t])
    mine = [x.detach().clone().requires_grad_() for x in (a, v, t)]
    theirs = paper(*mine)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    theirs.backward(grad)
    for x, y in zip((a, v, t), mine):
        torch.testing.assert_close(x.grad, y.grad)
    theirs_grads = dict(paper.named_parameters())
    for name, p in head.named_parameters():
        torch.testing.assert_close(p.grad, theirs_grads[name].grad, msg=name)


def test_model_passes_audio_visual_text_to_the_tensor_head():
    torch.manual_seed(0)
    model = tiny("plain", "tensor").eval()  # plain: the head reads the encoders' outputs
    text, audio, visual = torch.randn(3, 4, 6), torch.randn(3, 4, 5), torch.randn(3, 4, 3)
    seen = []
    model.fusion.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        model(text, audio, visual)
        x = model.encode(text, audio, visual)
    for got, m in zip(seen[0], ("audio", "visual", "text")):
        torch.testing.assert_close(got, x[m])


def test_tensor_head_rejects_bad_activations():
    with pytest.raises(ValueError, match="`activations` must be 3 of"):
        TensorFusionHead(3, 3, activations=("tanh", "gelu", None))


def test_low_rank_initialization_is_the_mib_codes():
    # The MIB code's low_rank: Xavier-normal factors, fusion_weights and fusion_bias (not zero).
    torch.manual_seed(0)
    module = LowRankFusion([3, 2, 4], 6, rank=2)
    torch.manual_seed(0)
    for factor in module.factors:
        torch.testing.assert_close(factor, nn.init.xavier_normal_(torch.empty_like(factor)))
    torch.testing.assert_close(module.fusion_weights, nn.init.xavier_normal_(torch.empty(1, 2)))
    torch.testing.assert_close(module.fusion_bias, nn.init.xavier_normal_(torch.empty(1, 6)))
    assert module.fusion_bias.abs().sum() > 0


def graph_by_hand(g, l, a, v):
    """ARGF as the notes describe it, node by node (l, a, v; pairs la, lv, av)."""
    x = {"l": l, "a": a, "v": v}
    s = {m: torch.tanh(g.score(x[m])) for m in x}
    unimodal = (s["l"] * l + s["a"] * a + s["v"] * v) / 3
    sim = lambda p, q: (F.softmax(p, -1) * F.softmax(q, -1)).sum(-1, keepdim=True) + 0.5  # noqa: E731
    pairs = ("la", "lv", "av")
    h = {p: g.bimodal(torch.cat([x[p[0]], x[p[1]]], -1)) for p in pairs}
    logit = {p: (s[p[0]] + s[p[1]]) / sim(x[p[0]], x[p[1]]) for p in pairs}
    w = F.softmax(torch.cat([logit[p] for p in pairs], -1), -1)
    node = {p: torch.tanh(w[:, k : k + 1] * h[p]) for k, p in enumerate(pairs)}
    bimodal = node["la"] + node["lv"] + node["av"]
    # Six trimodal nodes: the three pairs of bimodal nodes, and each bimodal node with the
    # modality it lacks.
    tri = [(node[p], node[q], (logit[p] + logit[q]) / sim(h[p], h[q])) for p, q in (("la", "lv"), ("la", "av"),
                                                                               ("lv", "av"))]
    tri += [(node[p], x[m], (logit[p] + s[m]) / sim(h[p], x[m])) for p, m in (("la", "v"), ("lv", "a"), ("av", "l"))]
    w2 = F.softmax(torch.cat([t[2] for t in tri], -1), -1)
    trimodal = sum(torch.tanh(w2[:, k : k + 1] * g.trimodal(torch.cat([p, q], -1))) for k, (p, q, _) in enumerate(tri))
    return g.readout(torch.cat([unimodal, bimodal, trimodal], -1))


def test_graph_fusion_has_the_six_trimodal_nodes_of_the_notes():
    torch.manual_seed(0)
    g = GraphFusion(5, 3).double()
    xs = [torch.randn(4, 5, dtype=torch.float64) for _ in range(3)]
    calls = []
    g.trimodal.register_forward_hook(lambda mod, args, y: calls.append(1))
    ours = g(xs)
    assert len(calls) == 6
    torch.testing.assert_close(ours, graph_by_hand(g, *xs))
