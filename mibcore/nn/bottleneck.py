"""The variational information-bottleneck head of MIB (and of VIB in general)."""
from typing import Optional

import torch
from torch import nn

from mibcore import functional as MF
from mibcore import reference


class BottleneckOutput:
    """(z, mu, std, kl), read as a named tuple: by attribute, index or unpacking.

    z: the sample (mu when not sampling); kl: KL(N(mu, std^2) || N(0, I)), reduced as
    kl_reduction says. `std` is computed on first access (from the scale head, with its own
    autograd nodes), because most readers never use it: the fused operator computes std inside.
    """

    _fields = ("z", "mu", "std", "kl")

    def __init__(self, z: torch.Tensor, mu: torch.Tensor, std: Optional[torch.Tensor], kl: torch.Tensor,
                 *, scale: Optional[torch.Tensor] = None, parameterization: str = "softplus", shift: float = -5.0):
        if std is None and scale is None:
            raise ValueError("BottleneckOutput needs `std` or the `scale` it is computed from")
        self.z, self.mu, self.kl = z, mu, kl
        self._std, self._scale = std, scale
        self._parameterization, self._shift = parameterization, shift

    @property
    def std(self) -> torch.Tensor:
        if self._std is None:
            self._std, _ = reference.std_and_log_std(self._scale, self._parameterization, self._shift)
        return self._std

    def __iter__(self):
        return iter((self.z, self.mu, self.std, self.kl))

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return tuple(self)[index]

    def _asdict(self):
        return dict(zip(self._fields, self))

    def __repr__(self):
        return "BottleneckOutput(" + ", ".join(f"{k}={v!r}" for k, v in self._asdict().items()) + ")"


class VariationalBottleneck(nn.Module):
    """Linear(in, hidden) + ReLU, then the mu and scale heads as ONE Linear(hidden, 2 * latent),
    then the fused reparameterize + KL operator.

    This is the paper's head (`encoder`, `fc_mu`, `fc_std` with std = softplus(raw - 5)) with the
    two head GEMMs fused: `heads.weight` is cat([fc_mu.weight, fc_std.weight]). Use
    `load_separate_heads` to load weights of the paper's layout. Under autocast the GEMMs run in
    autocast's dtype and the fused operator follows it (KL accumulates in fp32).

    Args:
        in_features, latent_features, hidden_features: layer sizes (the paper: d, d, 1024).
        parameterization, shift: how std comes from the scale head (see reparameterize_kl).
        kl_reduction: "mean" (the paper's: over every element), "batchmean" (summed over the latent
            dims, averaged over the rest: d x mean), "sum" (B x d x mean) or "none" (per sample);
            a KL weight beta tuned for "mean" is beta / d for "batchmean".
        sample_in_eval: sample z in eval mode too (the paper's code does); default z = mu.
    """

    def __init__(
        self,
        in_features: int,
        latent_features: int,
        hidden_features: int = 1024,
        parameterization: str = "softplus",
        shift: float = -5.0,
        kl_reduction: str = "mean",
        sample_in_eval: bool = False,
    ):
        super().__init__()
        if parameterization not in reference.PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {reference.PARAMETERIZATIONS}, got {parameterization!r}")
        if kl_reduction not in reference.REDUCTIONS:
            raise ValueError(f"kl_reduction must be one of {reference.REDUCTIONS}, got {kl_reduction!r}")
        for name, value in (("in_features", in_features), ("latent_features", latent_features),
                            ("hidden_features", hidden_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.latent_features = latent_features
        self.parameterization = parameterization
        self.shift = float(shift)
        self.kl_reduction = kl_reduction
        self.sample_in_eval = sample_in_eval
        self.encoder = nn.Linear(in_features, hidden_features)
        self.heads = nn.Linear(hidden_features, 2 * latent_features)

    @torch.no_grad()
    def load_separate_heads(self, encoder: nn.Linear, fc_mu: nn.Linear, fc_std: nn.Linear) -> None:
        """Copies the weights of the paper's three layers into this module."""
        self.encoder.weight.copy_(encoder.weight)
        self.encoder.bias.copy_(encoder.bias)
        self.heads.weight.copy_(torch.cat([fc_mu.weight, fc_std.weight]))
        self.heads.bias.copy_(torch.cat([fc_mu.bias, fc_std.bias]))

    def forward(self, x: torch.Tensor, sample: Optional[bool] = None, generator=None) -> BottleneckOutput:
        if sample is None:
            sample = self.training or self.sample_in_eval
        hidden = torch.relu(self.encoder(x))
        mu, scale = self.heads(hidden).split(self.latent_features, dim=-1)
        z, kl = MF.reparameterize_kl(
            mu, scale, parameterization=self.parameterization, shift=self.shift, sample=sample,
            reduction=self.kl_reduction, generator=generator,
        )
        return BottleneckOutput(z, mu, None, kl, scale=scale, parameterization=self.parameterization, shift=self.shift)

    def extra_repr(self) -> str:
        return (f"parameterization={self.parameterization!r}, shift={self.shift}, "
                f"kl_reduction={self.kl_reduction!r}, sample_in_eval={self.sample_in_eval}")
