"""The fusion methods of the MIB paper, as modules taking a list of [B, d] tensors -> [B, d_out].

Concat, addition and multiplication follow the paper's code; tensor fusion (TFN) and low-rank
fusion (LMF) call mibcore's fused operators (their parameters load from an nn.Linear over the
materialized outer product, resp. the LMF code's factors); TensorFusionHead is the MIB code's
`tensor` module (TensorFusion then two Linear layers); graph fusion follows ARGF as the MIB
code implements it; PoE is the product of Gaussian experts of the paper's Eq. 19.
"""
import math

import torch
from torch import nn

from mibcore import _checks
from mibcore import functional as MF
from mibcore.constants import accumulation_dtype


class ConcatFusion(nn.Module):
    """cat(inputs) -> Linear -> ReLU (the paper's default)."""

    def __init__(self, in_features, out_features, n_inputs=3):
        super().__init__()
        self.in_features = _as_list("ConcatFusion", in_features, n_inputs)
        out_features = _checks.positive_int("ConcatFusion", "out_features", out_features)
        self.linear = nn.Linear(sum(self.in_features), out_features)

    def forward(self, inputs):
        xs = _inputs("ConcatFusion", inputs, self.in_features)
        return torch.relu(self.linear(torch.cat(xs, dim=-1)))


class AdditionFusion(nn.Module):
    """Sum of the inputs (non-parametric; all inputs share one size)."""

    def forward(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


class MultiplicationFusion(nn.Module):
    """Elementwise product of the inputs (non-parametric, as the paper's code since 2022-11-01)."""

    def forward(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x
        return out


class TensorFusion(nn.Module):
    """TFN: Linear over the flattened outer product of [1; x_i], with dropout on the product.

    `weight`/`bias` have the shapes of nn.Linear(prod(d_i + 1), out_features), in the flatten
    order of the TFN code of the MIB repo and MMSA, so their post_fusion_layer_1 loads unchanged.
    The fused backends never materialize the outer product.
    """

    def __init__(self, in_features, out_features, dropout=0.0, n_inputs=3, bias=True):
        super().__init__()
        self.in_features = _as_list("TensorFusion", in_features, n_inputs, (2, 3))
        self.out_features = _checks.positive_int("TensorFusion", "out_features", out_features)
        self.dropout = _checks.probability("TensorFusion", "dropout", dropout)
        fused = math.prod(d + 1 for d in self.in_features)
        self.weight = nn.Parameter(torch.empty(out_features, fused))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Linear's default initialization, as the reference codes use.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, inputs):
        return MF.tensor_fusion(list(inputs), self.weight, self.bias, dropout=self.dropout, training=self.training)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, dropout={self.dropout}"


_ACTIVATIONS = {None: lambda y: y, "tanh": torch.tanh, "relu": torch.relu}


class TensorFusionHead(nn.Module):
    """The MIB code's `tensor` fusion module: TensorFusion (dropout on the outer product, then its
    Linear) as post_fusion_layer_1, then post_fusion_layer_2 and _3, Linear(out, out) each, with
    `activations[k]` after layer k + 1 ("tanh", "relu" or None). The parameter names are the MIB
    code's, so its state dict loads unchanged. The MIB code flattens audio (x) video (x) text,
    audio most significant: pass the inputs in that order to load its weights.
    """

    def __init__(self, in_features, out_features, dropout=0.5, activations=("tanh", "tanh", "tanh"), n_inputs=3):
        super().__init__()
        activations = tuple(activations)
        if len(activations) != 3 or any(a not in _ACTIVATIONS for a in activations):
            raise ValueError("TensorFusionHead: `activations` must be 3 of 'tanh', 'relu' or None, "
                             f"got {activations!r}")
        self.activations = activations
        self.post_fusion_layer_1 = TensorFusion(in_features, out_features, dropout=dropout, n_inputs=n_inputs)
        self.post_fusion_layer_2 = nn.Linear(out_features, out_features)
        self.post_fusion_layer_3 = nn.Linear(out_features, out_features)

    def forward(self, inputs):
        y = _ACTIVATIONS[self.activations[0]](self.post_fusion_layer_1(inputs))
        y = _ACTIVATIONS[self.activations[1]](self.post_fusion_layer_2(y))
        return _ACTIVATIONS[self.activations[2]](self.post_fusion_layer_3(y))

    def extra_repr(self):
        return f"activations={self.activations}"


class LowRankFusion(nn.Module):
    """LMF with rank-`rank` modality factors [rank, d_i + 1, out], fusion_weights [1, rank] and
    fusion_bias [1, out], all Xavier-normal as the MIB code's `low_rank` (cmib.py)."""

    def __init__(self, in_features, out_features, rank=5, n_inputs=3):
        super().__init__()
        self.in_features = _as_list("LowRankFusion", in_features, n_inputs, (2, 3))
        out_features = _checks.positive_int("LowRankFusion", "out_features", out_features)
        rank = _checks.positive_int("LowRankFusion", "rank", rank)
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(rank, d + 1, out_features)) for d in self.in_features]
        )
        self.fusion_weights = nn.Parameter(torch.empty(1, rank))
        self.fusion_bias = nn.Parameter(torch.empty(1, out_features))
        for p in (*self.factors, self.fusion_weights, self.fusion_bias):
            nn.init.xavier_normal_(p)

    def forward(self, inputs):
        return MF.low_rank_fusion(list(inputs), list(self.factors), self.fusion_weights, self.fusion_bias)


class GraphFusion(nn.Module):
    """Graph fusion (ARGF) as in the MIB code: unimodal, bimodal and trimodal nodes weighted by
    learned scores and similarities (softmaxed over the nodes of a layer), read out by three tanh
    layers."""

    def __init__(self, in_features, out_features, hidden=64):
        super().__init__()
        self.in_features = d = _checks.positive_int("GraphFusion", "in_features", in_features)
        out_features = _checks.positive_int("GraphFusion", "out_features", out_features)
        hidden = _checks.positive_int("GraphFusion", "hidden", hidden)
        self.score = nn.Linear(d, 1)
        self.bimodal = nn.Sequential(nn.Linear(2 * d, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, d), nn.Tanh())
        self.trimodal = nn.Sequential(nn.Linear(2 * d, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, d), nn.Tanh())
        self.readout = nn.Sequential(
            nn.Linear(3 * d, out_features), nn.Tanh(), nn.Linear(out_features, out_features), nn.Tanh(),
            nn.Linear(out_features, out_features), nn.Tanh(),
        )

    def forward(self, inputs):
        xs = list(inputs)
        if len(xs) not in (2, 3):  # (one input has no pairs; the readout takes three node groups)
            raise ValueError(f"GraphFusion: it fuses 2 or 3 inputs [B, {self.in_features}], got {len(xs)}")
        _inputs("GraphFusion", xs, [self.in_features] * len(xs))
        scores = [torch.tanh(self.score(x)) for x in xs]  # [B, 1] each
        unimodal = sum(s * x for s, x in zip(scores, xs)) / len(xs)
        pairs = [(i, j) for i in range(len(xs)) for j in range(i + 1, len(xs))]
        soft = [torch.softmax(x, dim=-1) for x in xs]
        pair_logits = torch.cat(
            [(scores[i] + scores[j]) / ((soft[i] * soft[j]).sum(-1, keepdim=True) + 0.5) for i, j in pairs], dim=-1
        )
        pair_weights = torch.softmax(pair_logits, dim=-1)
        bi_mlp = [self.bimodal(torch.cat([xs[i], xs[j]], -1)) for i, j in pairs]
        bi_nodes = [torch.tanh(pair_weights[:, k : k + 1] * h) for k, h in enumerate(bi_mlp)]
        bimodal = sum(bi_nodes)
        # Trimodal nodes, built like the bimodal ones from two nodes that together span three
        # modalities: two bimodal nodes, or a bimodal node and the modality it lacks (6 for three
        # inputs). As in the MIB code, a bimodal node's score is its pair logit and its similarity
        # is taken on its MLP output. Node: (modalities, vector, similarity vector, score).
        bi = [(set(p), bi_nodes[k], torch.softmax(bi_mlp[k], dim=-1), pair_logits[:, k : k + 1])
              for k, p in enumerate(pairs)]
        uni = [({m}, xs[m], soft[m], scores[m]) for m in range(len(xs))]
        combos = [(p, q) for k, p in enumerate(bi) for q in bi[k + 1 :] if len(p[0] | q[0]) == 3]
        combos += [(p, q) for p in bi for q in uni if not p[0] & q[0]]
        if combos:
            tri_logits = torch.cat([(p[3] + q[3]) / ((p[2] * q[2]).sum(-1, keepdim=True) + 0.5) for p, q in combos],
                                   dim=-1)
            tri_weights = torch.softmax(tri_logits, dim=-1)
            trimodal = sum(torch.tanh(tri_weights[:, k : k + 1] * self.trimodal(torch.cat([p[1], q[1]], -1)))
                           for k, (p, q) in enumerate(combos))
        else:
            trimodal = torch.zeros_like(unimodal)
        return self.readout(torch.cat([unimodal, bimodal, trimodal], dim=-1))


class PoEFusion(nn.Module):
    """Product of Gaussian experts (the paper's Eq. 19) with a N(0, I) prior expert:
    precision-weighted mean of the experts' means. Takes (mu, std) pairs; inputs without a
    distribution (plain tensors) count as unit-variance experts. The precisions are computed in
    float32 (float64 for float64): in fp16, 1 / std^2 overflows already at std = 0.004."""

    def __init__(self, eps=1e-8):
        super().__init__()
        self.eps = _checks.finite_number("PoEFusion", "eps", eps)
        if self.eps < 0:
            raise ValueError(f"PoEFusion: `eps` must be >= 0, got {eps!r}")

    def forward(self, inputs, stds=None):
        mus = list(inputs)
        if not mus:
            raise ValueError("PoEFusion: `inputs` must hold at least one expert's mean")
        stds = list(stds) if stds is not None else [torch.ones_like(m) for m in mus]
        if len(stds) != len(mus):
            raise ValueError(f"PoEFusion: `stds` must hold one std per input ({len(mus)}), got {len(stds)}")
        for i, (mu, std) in enumerate(zip(mus, stds)):  # (broadcasting would mix experts silently)
            _checks.like("PoEFusion", f"inputs[{i}]", mu, "inputs[0]", mus[0])
            _checks.like("PoEFusion", f"stds[{i}]", std, f"inputs[{i}]", mu)
        acc = accumulation_dtype(mus[0].dtype)
        precision = torch.ones_like(mus[0], dtype=acc)  # the prior expert N(0, 1)
        weighted = torch.zeros_like(mus[0], dtype=acc)
        for mu, std in zip(mus, stds):
            std = std.to(acc)
            p = 1.0 / (std * std + self.eps)
            precision = precision + p
            weighted = weighted + mu.to(acc) * p
        return (weighted / precision).to(mus[0].dtype)


def _inputs(module, inputs, in_features):
    """The inputs as a list, one [..., d_i] tensor per declared input size."""
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError(f"{module}: `inputs` must be a list or tuple of tensors, got {type(inputs).__name__}")
    xs = list(inputs)
    if len(xs) != len(in_features):
        raise ValueError(f"{module}: it was built for {len(in_features)} inputs of sizes {in_features}, "
                         f"got {len(xs)}")
    for i, (x, d) in enumerate(zip(xs, in_features)):
        _checks.tensor(module, f"inputs[{i}]", x)
        if x.dim() == 0 or x.shape[-1] != d:
            raise ValueError(f"{module}: `inputs[{i}]` must be [..., {d}], got shape {list(x.shape)}")
    return xs


def _as_list(module, in_features, n_inputs, counts=None):
    """The input sizes as a list of positive ints, one per input; `counts` (e.g. (2, 3)) are the
    numbers of inputs the module supports (None: any positive number)."""
    sizes = list(in_features) if isinstance(in_features, (list, tuple)) else None
    if sizes is None:
        n_inputs = _checks.positive_int(module, "n_inputs", n_inputs)
        sizes = [in_features] * n_inputs
    if counts is not None and len(sizes) not in counts:
        raise ValueError(f"{module}: it fuses {' or '.join(map(str, counts))} inputs, got {len(sizes)} "
                         "(`n_inputs`, or the length of `in_features`)")
    return [_checks.positive_int(module, "in_features", d) for d in sizes]


FUSIONS = {
    "concat": ConcatFusion,
    "addition": AdditionFusion,
    "multiplication": MultiplicationFusion,
    "tensor": TensorFusionHead,
    "low-rank": LowRankFusion,
    "graph": GraphFusion,
    "poe": PoEFusion,
}


# How many inputs each fusion takes, where it is not any number >= 2: TFN and LMF have operators
# for 2 and 3 inputs (their cost grows as the product of the widths), graph fusion's readout
# takes unimodal, bimodal and trimodal nodes.
FUSION_INPUTS = {"tensor": (2, 3), "low-rank": (2, 3), "graph": (2, 3)}


def build_fusion(name, d, out=None, *, tensor_dropout=0.5, tensor_activations=("tanh", "tanh", "tanh"), rank=5,
                 n_inputs=3):
    """A fusion module by name for `n_inputs` d-dimensional inputs, producing `out` (default d)
    features. "tensor" is the MIB code's 3-layer head (TensorFusionHead) with `tensor_activations`."""
    out = d if out is None else out
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; expected one of {', '.join(FUSIONS)}")
    counts = FUSION_INPUTS.get(name)
    if n_inputs < 2 or (counts and n_inputs not in counts):
        anything = [f for f in FUSIONS if f not in FUSION_INPUTS]
        raise ValueError(f"fusion {name!r} fuses {' or '.join(map(str, counts or (2,)))}"
                         f"{'' if counts else ' or more'} modalities, got {n_inputs}; "
                         f"{', '.join(anything)} fuse any number from 2")
    if name == "concat":
        return ConcatFusion(d, out, n_inputs=n_inputs)
    if name == "tensor":
        return TensorFusionHead(d, out, dropout=tensor_dropout, activations=tensor_activations, n_inputs=n_inputs)
    if name == "low-rank":
        return LowRankFusion(d, out, rank=rank, n_inputs=n_inputs)
    if name == "graph":
        return GraphFusion(d, out)
    if out != d:
        raise ValueError(f"fusion {name!r} is non-parametric: its output size is d = {d}")
    return FUSIONS[name]()
