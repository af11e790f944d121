"""The MIB models (Mai, Zeng, Hu 2022): E-MIB, L-MIB, C-MIB, and the model without IB.

Shared encoders (the paper's section 1.1 of reference/mib-paper-and-code.md): each modality
is projected by Conv1d(k=3, no bias) to d; audio and visual go through MulT encoders; the last
time step is read out. Text arrives as precomputed token features (e.g. 768-d BERT outputs),
projected like the paper's BERT branch (no transformer on top).

  plain  x = F(x_l, x_a, x_v)                    -> y = Dec(x)
  E-MIB  x = F(x_l, x_a, x_v) -> z = IB(x)       -> y = Dec(z)
  L-MIB  z_m = IB_m(x_m), y_m = Dec_m(z_m); x = F(z_l, z_a, z_v) -> y = Dec(x)
  C-MIB  z_m = IB_m(x_m), y_m = Dec_m(z_m); x = F(z_l, z_a, z_v) -> z = IB(x) -> y = Dec(z)

Compute only what is read (`MIBConfig.full_sequence = False`, the default): the models read each
modality at its last time step, so the text projection computes its convolution at t = T - 1
only, and each encoder's last layer computes its query, residuals, FFN and LayerNorms (and the
final LayerNorm) for position T - 1 only; its keys and values, and the earlier layers, still see
every position. Outputs and gradients equal those of the full computation
(`full_sequence = True`, which `MIB.sequences` always runs: every position's features, for
reading out differently). With dropout on, the two modes apply dropout to tensors of different
shapes, so their masks (and samples) differ.

Text can also go through a local Hugging Face backbone (`text_backbone=PATH`, never downloaded):
token ids -> backbone -> the same Conv1d projection -> last step, as the paper's BERT branch.

Fusion F takes (text, audio, visual), except tensor fusion, which takes (audio, visual, text):
the paper's TFN flattens audio (x) video (x) text, so its post_fusion_layer_1 loads unchanged. Its
head is the paper's per-variant `tensor` module (TENSOR_ACTIVATIONS).

Losses: task loss (L1 for regression, BCE-with-logits for multi-label emotion) of each
prediction + beta * KL of each bottleneck, reduced as `kl_reduction` says (KL_REDUCTIONS; the
paper's "mean" by default). Mode "clean" (the default) counts the final task loss once and uses
z = mu at evaluation; mode "faithful" counts it twice and samples z at evaluation, as the paper's
code does.
"""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from mibcore import _checks
from mibcore.models.encoders import Projection, TransformerEncoder
from mibcore.nn import PoEFusion, VariationalBottleneck, build_fusion

MODALITIES = ("text", "audio", "visual")
VARIANTS = ("plain", "emib", "lmib", "cmib")
MODES = ("faithful", "clean")  # the paper's quirks, or not (see the docstring)
# How each bottleneck's KL [B, d] becomes its loss term, and what that does to beta's scale (the
# task loss is a mean over the batch either way). The same gradient needs beta_batchmean =
# beta_mean / d and beta_sum = beta_mean / (B * d).
KL_REDUCTIONS = (
    "mean",       # the mean over every element (the paper's): 1/d of the textbook VIB's KL per sample
    "batchmean",  # summed over the d latent dims, averaged over the batch: the per-sample KL (VIB's), d x mean
    "sum",        # summed over everything: B x d x mean, so its weight grows with the batch size
)
# Every dropout probability of MIBConfig (the training's `dropouts=False` sets them all to 0).
DROPOUT_FIELDS = ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "tensor_dropout")
# The activations after the three Linear layers of the paper's tensor fusion head, which differ
# between its model files; "plain" (E-MIB without its bottleneck) takes E-MIB's.
TENSOR_ACTIVATIONS = {"cmib": ("tanh", "tanh", "tanh"), "emib": (None, "tanh", "relu"),
                      "lmib": (None, "tanh", "relu"), "plain": (None, "tanh", "relu")}
# The order in which each fusion takes the modalities (default: MODALITIES).
FUSION_ORDER = {"tensor": ("audio", "visual", "text")}


@dataclasses.dataclass
class MIBConfig:
    variant: str = "cmib"
    fusion: str = "concat"
    text_dim: int = 768
    audio_dim: int = 74
    visual_dim: int = 47
    d: int = 50
    hidden: int = 1024
    heads: int = 5
    layers: int = 3
    attn_dropout: float = 0.5
    relu_dropout: float = 0.3
    res_dropout: float = 0.3
    embed_dropout: float = 0.2
    tensor_dropout: float = 0.5
    lmf_rank: int = 5
    beta: float = 1e-3               # 0 gives B-MIB
    kl_reduction: str = "mean"       # one of KL_REDUCTIONS (beta's scale depends on it)
    output_dim: int = 1              # 1: regression (L1); > 1: multi-label emotion (BCE)
    mode: str = "clean"              # or "faithful" (the paper's quirks; see the docstring)
    no_ib: tuple = ()                # modalities without a unimodal bottleneck ("W/O IB on X")
    shift: float = -5.0
    text_backbone: str = None        # local Hugging Face model dir: text arrives as token ids
    full_sequence: bool = False      # True: encode every time step, then read the last one (the
                                     # paper's computation); False: compute only the last step's
                                     # readout (equal outputs and gradients; see the docstring)

    def validate(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be {' or '.join(map(repr, MODES))}, got {self.mode!r}")
        _checks.choice("MIBConfig", "kl_reduction", self.kl_reduction, KL_REDUCTIONS)
        if isinstance(self.no_ib, str):  # ("text" would read as the letters 't', 'e', 'x')
            raise ValueError(f"no_ib must be a sequence of modality names, e.g. ('{self.no_ib}',), got {self.no_ib!r}")
        unknown = set(self.no_ib) - set(MODALITIES)
        if unknown:
            raise ValueError(f"no_ib names unknown modalities {sorted(unknown)}; expected {MODALITIES}")
        for name in ("text_dim", "audio_dim", "visual_dim", "d", "hidden", "heads", "layers", "lmf_rank", "output_dim"):
            _checks.positive_int("MIBConfig", name, getattr(self, name))
        for name in DROPOUT_FIELDS:
            _checks.probability("MIBConfig", name, getattr(self, name))
        if _checks.finite_number("MIBConfig", "beta", self.beta) < 0:
            raise ValueError(f"MIBConfig: `beta` must be >= 0, got {self.beta!r}")
        _checks.finite_number("MIBConfig", "shift", self.shift)
        if self.d % self.heads:
            raise ValueError(f"d ({self.d}) must be divisible by heads ({self.heads})")
        return self


class MIB(nn.Module):
    def __init__(self, config: MIBConfig):
        super().__init__()
        self.config = config.validate()
        c = config
        self.text_backbone = None
        text_dim = c.text_dim
        if c.text_backbone:
            from mibcore.models.text_backbone import TextBackbone

            self.text_backbone = TextBackbone(c.text_backbone)
            text_dim = self.text_backbone.hidden_size
        self.proj = nn.ModuleDict({
            "text": Projection(text_dim, c.d),
            "audio": Projection(c.audio_dim, c.d),
            "visual": Projection(c.visual_dim, c.d),
        })
        encoder = lambda: TransformerEncoder(c.d, c.heads, c.layers, c.attn_dropout, c.relu_dropout,  # noqa: E731
                                             c.res_dropout, c.embed_dropout, batch_first=True)
        self.encoders = nn.ModuleDict({"audio": encoder(), "visual": encoder()})
        unimodal = c.variant in ("lmib", "cmib")
        self.unimodal_ib = nn.ModuleDict({
            m: self._bottleneck() for m in MODALITIES if unimodal and m not in c.no_ib
        })
        self.unimodal_dec = nn.ModuleDict({m: nn.Linear(c.d, c.output_dim) for m in self.unimodal_ib})
        self.fusion = build_fusion(c.fusion, c.d, tensor_dropout=c.tensor_dropout,
                                   tensor_activations=TENSOR_ACTIVATIONS[c.variant], rank=c.lmf_rank)
        self.fused_ib = self._bottleneck() if c.variant in ("emib", "cmib") else None
        self.decoder = nn.Linear(c.d, c.output_dim)

    def _bottleneck(self):
        c = self.config
        return VariationalBottleneck(c.d, c.d, c.hidden, shift=c.shift, kl_reduction=c.kl_reduction,
                                     sample_in_eval=c.mode == "faithful")

    def _features(self, text, audio, visual, last_only):
        """Per modality [B, T, d] (every position), or [B, 1, d] with `last_only`."""
        if self.text_backbone is not None:
            if text.dtype != torch.int64 or text.dim() != 2:
                raise ValueError("with a text backbone, `text` must be int64 token ids [B, T]")
            text = self.text_backbone(text)
        x = {"text": self.proj["text"](text, last_only=last_only)}
        for name, seq in (("audio", audio), ("visual", visual)):
            x[name] = self.encoders[name](self.proj[name](seq), last_only=last_only)
        return x

    def sequences(self, text, audio, visual):
        """Every time step's features [B, T, d] of each modality (the full computation)."""
        return self._features(text, audio, visual, last_only=False)

    def encode(self, text, audio, visual):
        """Last-time-step features [B, d] of each modality. `text`: features [B, T, text_dim], or
        token ids [B, T] with a text backbone."""
        x = self._features(text, audio, visual, last_only=not self.config.full_sequence)
        return {m: seq[:, -1] for m, seq in x.items()}

    def forward(self, text, audio, visual):
        """Returns a dict: pred [B, output_dim], unimodal preds, and the KL terms."""
        x = self.encode(text, audio, visual)
        out = {"kl": [], "unimodal_pred": {}}
        z, heads = dict(x), {}
        for m in MODALITIES:
            if m in self.unimodal_ib:
                b = heads[m] = self.unimodal_ib[m](x[m])
                out["kl"].append(b.kl)
                out["unimodal_pred"][m] = self.unimodal_dec[m](b.z)
                z[m] = b.z
        order = FUSION_ORDER.get(self.config.fusion, MODALITIES)
        zs = [z[m] for m in order]
        if isinstance(self.fusion, PoEFusion):  # the only reader of the bottlenecks' stds
            stds = [heads[m].std if m in heads else torch.ones_like(z[m]) for m in order]
            fused = self.fusion(zs, stds)
        else:
            fused = self.fusion(zs)
        if self.fused_ib is not None:
            b = self.fused_ib(fused)
            out["kl"].append(b.kl)
            fused = b.z
        out["pred"] = self.decoder(fused)
        return out

    def task_loss(self, pred, target):
        if self.config.output_dim == 1:
            return F.l1_loss(pred.reshape(-1), target.reshape(-1).to(pred.dtype))
        return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype))

    def loss(self, out, target, beta=None):
        """The paper's total loss (see the module docstring). beta: this step's KL weight, a float
        or a 0-d tensor (a schedule's, refilled in place between steps: mibcore.train.beta_schedule);
        default config.beta."""
        c = self.config
        beta = c.beta if beta is None else beta
        loss = self.task_loss(out["pred"], target)
        if c.mode == "faithful":
            loss = loss + self.task_loss(out["pred"], target)  # the paper's duplicated final L1
        for pred in out["unimodal_pred"].values():
            loss = loss + self.task_loss(pred, target)
        for kl in out["kl"]:
            loss = loss + beta * kl.to(loss.dtype)
        return loss


class EMIB(MIB):
    def __init__(self, **kwargs):
        super().__init__(MIBConfig(variant="emib", **kwargs))


class LMIB(MIB):
    def __init__(self, **kwargs):
        super().__init__(MIBConfig(variant="lmib", **kwargs))


class CMIB(MIB):
    def __init__(self, **kwargs):
        super().__init__(MIBConfig(variant="cmib", **kwargs))


def build(variant="cmib", **kwargs):
    """A MIB model by variant name ('emib', 'lmib', 'cmib', 'plain') and MIBConfig fields."""
    fields = {f.name for f in dataclasses.fields(MIBConfig)}
    unknown = set(kwargs) - fields
    if unknown:
        raise TypeError(f"build(): unknown options {sorted(unknown)}; expected MIBConfig fields")
    if "no_ib" in kwargs and not isinstance(kwargs["no_ib"], str):
        kwargs["no_ib"] = tuple(kwargs["no_ib"])
    return MIB(MIBConfig(variant=variant, **kwargs))
