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

Any number of modalities (2 to 6, `MIBConfig.modalities = {name: width}`; default the paper's
text, audio, visual) share this machinery, by one rule: a modality named "text" is projected only
(contextual token features, e.g. BERT outputs, as the paper's BERT branch); every other modality
is projected, then encoded by a transformer (as the paper's audio and visual). The models take
their inputs in the order of `model.modalities`, or by name (`model(text=..., audio=...)`).
`EncoderMIB` puts the same bottlenecks, fusion and losses around one's own encoders.

Text can also go through a local Hugging Face backbone (`text_backbone=PATH`, never downloaded):
token ids -> backbone -> the same Conv1d projection -> last step, as the paper's BERT branch.

Fusion F takes the modalities in the model's order, except tensor fusion, which takes text last
(fusion_order): the paper's TFN flattens audio (x) video (x) text, so its post_fusion_layer_1 loads
unchanged. Its head is the paper's per-variant `tensor` module (TENSOR_ACTIVATIONS). Tensor, low-rank
and graph fusion take 2 or 3 modalities; concat, addition, multiplication and PoE any number.

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

MODALITIES = ("text", "audio", "visual")  # the paper's, in its order: the default modalities
MAX_MODALITIES = 6  # of the built-in encoders (MIBConfig.modalities): 2 to 6
TEXT = "text"  # the modality projected without a transformer (see the docstring)
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
# The MIBConfig fields of the built-in encoders, which EncoderMIB (one's own encoders) refuses.
ENCODER_FIELDS = ("text_dim", "audio_dim", "visual_dim", "modalities", "heads", "layers", "attn_dropout",
                  "relu_dropout", "res_dropout", "embed_dropout", "text_backbone", "full_sequence")


def fusion_order(fusion, modalities):
    """The order in which `fusion` takes the modalities: theirs, but text last for tensor fusion
    (the paper's TFN flattens audio (x) video (x) text: (audio, visual, text) for its triple)."""
    if fusion == "tensor" and TEXT in modalities:
        return tuple(m for m in modalities if m != TEXT) + (TEXT,)
    return tuple(modalities)


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
    modalities: dict = None          # {name: feature width}, 2 to 6, in the model's order; None: the
                                     # paper's text, audio, visual of text_dim, audio_dim, visual_dim

    def modality_dims(self):
        """{modality: feature width} of the built-in encoders, in the model's order."""
        if self.modalities is None:
            return {"text": self.text_dim, "audio": self.audio_dim, "visual": self.visual_dim}
        return dict(self.modalities)

    def validate(self, builtin_encoders=True):
        """Raises ValueError naming the first bad field; returns self. `builtin_encoders=False`
        (EncoderMIB) skips the fields of the built-in encoders (ENCODER_FIELDS)."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be {' or '.join(map(repr, MODES))}, got {self.mode!r}")
        _checks.choice("MIBConfig", "kl_reduction", self.kl_reduction, KL_REDUCTIONS)
        if isinstance(self.no_ib, str):  # ("text" would read as the letters 't', 'e', 'x')
            raise ValueError(f"no_ib must be a sequence of modality names, e.g. ('{self.no_ib}',), got {self.no_ib!r}")
        for name in ("d", "hidden", "lmf_rank", "output_dim"):
            _checks.positive_int("MIBConfig", name, getattr(self, name))
        for name in DROPOUT_FIELDS:
            _checks.probability("MIBConfig", name, getattr(self, name))
        if _checks.finite_number("MIBConfig", "beta", self.beta) < 0:
            raise ValueError(f"MIBConfig: `beta` must be >= 0, got {self.beta!r}")
        _checks.finite_number("MIBConfig", "shift", self.shift)
        if builtin_encoders:
            self._validate_encoders()
        return self

    def _validate_encoders(self):
        for name in ("text_dim", "audio_dim", "visual_dim", "heads", "layers"):
            _checks.positive_int("MIBConfig", name, getattr(self, name))
        if self.modalities is not None:
            if not isinstance(self.modalities, dict):
                raise TypeError("MIBConfig: `modalities` must be a dict {name: feature width}, e.g. "
                                f"{{'text': 768, 'audio': 74}}, got {type(self.modalities).__name__}")
            _checks.modality_names("MIBConfig", "modalities", list(self.modalities), 2, MAX_MODALITIES)
            for name, width in self.modalities.items():
                _checks.positive_int("MIBConfig", f"modalities[{name!r}]", width)
            defaults = MIBConfig()
            widths = [f for f in ("text_dim", "audio_dim", "visual_dim") if getattr(self, f) != getattr(defaults, f)]
            if widths:  # (they would be silently unused)
                raise ValueError(f"MIBConfig: give every width in `modalities`; {', '.join(widths)} apply only "
                                 "without it")
        if self.text_backbone and TEXT not in self.modality_dims():
            raise ValueError(f"MIBConfig: `text_backbone` encodes the text modality, but `modalities` has none "
                             f"({list(self.modality_dims())})")
        if self.d % self.heads:
            raise ValueError(f"d ({self.d}) must be divisible by heads ({self.heads})")


class MIB(nn.Module):
    """A MIB model (see the module docstring) on the built-in encoders of `config`, or around
    `encoders` ({modality: nn.Module mapping its input to [B, config.d]}; EncoderMIB builds it)."""

    def __init__(self, config: MIBConfig, encoders=None):
        super().__init__()
        self.config = config.validate(builtin_encoders=encoders is None)
        if encoders is None:
            self.modalities = tuple(config.modality_dims())
            self._build_encoders()
        else:
            self.modalities = tuple(encoders)
            self.proj = None  # (encode: the user's encoders give [B, d] themselves)
            self.encoders = nn.ModuleDict(encoders)
        self._build_head()

    def _build_encoders(self):
        """The built-in encoders, in this order (the order in which they draw their initial weights):
        the text backbone, each modality's projection, then the transformers of all but text."""
        c = self.config
        widths = c.modality_dims()
        self.text_backbone = None
        if c.text_backbone:
            from mibcore.models.text_backbone import TextBackbone

            self.text_backbone = TextBackbone(c.text_backbone)
            widths[TEXT] = self.text_backbone.hidden_size
        self.proj = nn.ModuleDict({m: Projection(width, c.d) for m, width in widths.items()})
        encoder = lambda: TransformerEncoder(c.d, c.heads, c.layers, c.attn_dropout, c.relu_dropout,  # noqa: E731
                                             c.res_dropout, c.embed_dropout, batch_first=True)
        self.encoders = nn.ModuleDict({m: encoder() for m in self.modalities if m != TEXT})

    def _build_head(self):
        """What every model has after its encoders: the unimodal bottlenecks and decoders (L-MIB,
        C-MIB), the fusion, the fused bottleneck (E-MIB, C-MIB) and the decoder."""
        c = self.config
        unknown = [m for m in c.no_ib if m not in self.modalities]
        if unknown:
            raise ValueError(f"no_ib names unknown modalities {sorted(unknown)}; expected {self.modalities}")
        unimodal = c.variant in ("lmib", "cmib")
        self.unimodal_ib = nn.ModuleDict({
            m: self._bottleneck() for m in self.modalities if unimodal and m not in c.no_ib
        })
        self.unimodal_dec = nn.ModuleDict({m: nn.Linear(c.d, c.output_dim) for m in self.unimodal_ib})
        self.fusion_order = fusion_order(c.fusion, self.modalities)
        self.fusion = build_fusion(c.fusion, c.d, tensor_dropout=c.tensor_dropout, n_inputs=len(self.modalities),
                                   tensor_activations=TENSOR_ACTIVATIONS[c.variant], rank=c.lmf_rank)
        self.fused_ib = self._bottleneck() if c.variant in ("emib", "cmib") else None
        self.decoder = nn.Linear(c.d, c.output_dim)

    def _bottleneck(self):
        c = self.config
        return VariationalBottleneck(c.d, c.d, c.hidden, shift=c.shift, kl_reduction=c.kl_reduction,
                                     sample_in_eval=c.mode == "faithful")

    def _by_name(self, inputs, named):
        """{modality: input} of a forward's arguments: positional in the order of self.modalities,
        then by name."""
        if len(inputs) > len(self.modalities):
            raise TypeError(f"{type(self).__name__}: takes one input per modality {self.modalities}, "
                            f"got {len(inputs)} positional inputs")
        x = dict(zip(self.modalities, inputs))
        for m in named:
            if m not in self.modalities or m in x:
                why = "given twice" if m in x else "not one of this model's modalities"
                raise TypeError(f"{type(self).__name__}: input {m!r} is {why} {self.modalities}")
        x.update(named)
        missing = [m for m in self.modalities if m not in x]
        if missing:
            raise TypeError(f"{type(self).__name__}: missing the input of {', '.join(missing)} "
                            f"(one per modality {self.modalities}, positional or by name)")
        return x

    def _features(self, x, last_only):
        """Per modality [B, T, d] (every position), or [B, 1, d] with `last_only`."""
        if self.text_backbone is not None:
            if x[TEXT].dtype != torch.int64 or x[TEXT].dim() != 2:
                raise ValueError("with a text backbone, `text` must be int64 token ids [B, T]")
            x = {**x, TEXT: self.text_backbone(x[TEXT])}
        out = {}
        for m in self.modalities:
            if m in self.encoders:  # (the projection's every position: the transformer's keys and values)
                out[m] = self.encoders[m](self.proj[m](x[m]), last_only=last_only)
            else:
                out[m] = self.proj[m](x[m], last_only=last_only)
        return out

    def sequences(self, *inputs, **named):
        """Every time step's features [B, T, d] of each modality (the full computation); inputs as
        forward's. Built-in encoders only."""
        if self.proj is None:
            raise TypeError(f"{type(self).__name__}: sequences() reads the built-in encoders; this model has yours")
        return self._features(self._by_name(inputs, named), last_only=False)

    def encode(self, *inputs, **named):
        """Features [B, d] of each modality: the last time step of the built-in encoders (`text`:
        features [B, T, text_dim], or token ids [B, T] with a text backbone), or the output of
        one's own encoders."""
        x = self._by_name(inputs, named)
        if self.proj is None:
            return {m: self._checked(m, self.encoders[m](x[m])) for m in self.modalities}
        x = self._features(x, last_only=not self.config.full_sequence)
        return {m: seq[:, -1] for m, seq in x.items()}

    def _checked(self, m, h):
        d = self.config.d
        if not isinstance(h, torch.Tensor) or h.dim() != 2 or h.shape[1] != d:
            got = list(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(f"{type(self).__name__}: encoders[{m!r}] must map its input to [B, d={d}], got {got}")
        return h

    def forward(self, *inputs, **named):
        """Returns a dict: pred [B, output_dim], unimodal preds, and the KL terms. The inputs: one
        per modality, in the order of self.modalities, or by name."""
        x = self.encode(*inputs, **named)
        out = {"kl": [], "unimodal_pred": {}}
        z, heads = dict(x), {}
        for m in self.modalities:
            if m in self.unimodal_ib:
                b = heads[m] = self.unimodal_ib[m](x[m])
                out["kl"].append(b.kl)
                out["unimodal_pred"][m] = self.unimodal_dec[m](b.z)
                z[m] = b.z
        order = self.fusion_order
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


class EncoderMIB(MIB):
    """E-MIB, L-MIB, C-MIB or plain around one's own encoders: `encoders` = {modality: nn.Module
    mapping that modality's input to [B, d]} (2 or more; a wrapped Hugging Face model too). The
    bottlenecks, fusion, decoders and losses are MIB's; `options` are MIBConfig's but those of the
    built-in encoders (ENCODER_FIELDS). Inputs as MIB's: one per modality, in the order of
    `encoders`, or by name; forward returns pred, unimodal_pred and kl, and loss() the total."""

    def __init__(self, encoders, variant="cmib", **options):
        if not isinstance(encoders, dict):
            raise TypeError(f"EncoderMIB: `encoders` must be a dict {{modality: nn.Module}}, got "
                            f"{type(encoders).__name__}")
        _checks.modality_names("EncoderMIB", "encoders", list(encoders))
        for m, module in encoders.items():
            if not isinstance(module, nn.Module):
                raise TypeError(f"EncoderMIB: `encoders[{m!r}]` must be an nn.Module, got {type(module).__name__}")
        _check_options("EncoderMIB", options)
        builtin = sorted(set(options) & set(ENCODER_FIELDS))
        if builtin:
            raise TypeError(f"EncoderMIB: options {builtin} configure the built-in encoders, which yours replace")
        super().__init__(MIBConfig(variant=variant, **_tupled(options)), encoders=encoders)


def _check_options(fn, options):
    unknown = set(options) - {f.name for f in dataclasses.fields(MIBConfig)}
    if unknown:
        raise TypeError(f"{fn}: unknown options {sorted(unknown)}; expected MIBConfig fields")


def _tupled(options):
    """no_ib as a tuple (a list from a config file; a str is left for validate to refuse)."""
    if "no_ib" in options and not isinstance(options["no_ib"], str):
        return {**options, "no_ib": tuple(options["no_ib"])}
    return options


def build(variant="cmib", **kwargs):
    """A MIB model by variant name ('emib', 'lmib', 'cmib', 'plain') and MIBConfig fields, e.g.
    `modalities={"text": 768, "audio": 74, "eeg": 32}` for other modalities than the paper's."""
    _check_options("build()", kwargs)
    return MIB(MIBConfig(variant=variant, **_tupled(kwargs)))
