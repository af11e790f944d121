"""Reference (pure PyTorch) reparameterization and KL, the paper's formulas.

MIB (cmib.py): std = softplus(fc_std(x) - 5); z = mu + std * randn_like(std);
KL = 0.5 * mean(mu^2 + std^2 - 2 log std - 1). This module keeps those formulas and adds
what the contract requires: three parameterizations, four reductions, a log std that stays
finite where softplus underflows, and fp32 (fp64 for fp64 inputs) arithmetic.
"""
import torch
import torch.nn.functional as F

from mibcore.constants import PARAMETERIZATIONS, REDUCTIONS, SOFTPLUS_THRESHOLD
from mibcore.constants import accumulation_dtype


def std_and_log_std(scale, parameterization="softplus", shift=-5.0):
    """(std, log std) for a scale tensor, computed in scale's dtype."""
    if parameterization == "softplus":
        x = scale + shift
        std = F.softplus(x, threshold=SOFTPLUS_THRESHOLD)
        deep = x < -SOFTPLUS_THRESHOLD  # there softplus(x) = e^x to working precision
        # The log's input is 1 where the other branch is taken, so that its gradient is finite.
        log_std = torch.where(deep, x, torch.log(torch.where(deep, torch.ones_like(std), std)))
        return std, log_std
    if parameterization == "logvar":
        return torch.exp(0.5 * scale), 0.5 * scale
    if parameterization == "std":
        return scale, torch.log(scale)
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")


def reduce_kl(kl_rows, reduction, numel):
    """Reduces per-row KL sums (shape mu.shape[:-1]) as `reduction` asks."""
    if reduction == "none":
        return kl_rows
    if reduction == "sum":
        return kl_rows.sum()
    if reduction == "mean":  # the paper's: mean over every element (NaN when empty, like torch.mean)
        return kl_rows.sum() / numel
    if reduction == "batchmean":
        return kl_rows.sum() / kl_rows.numel()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reparameterize_kl(
    mu,
    scale,
    *,
    parameterization="softplus",
    shift=-5.0,
    sample=True,
    reduction="mean",
    generator=None,
    eps=None,
):
    """Returns (z, kl). `eps` (optional) replaces the standard-normal draw, for tests."""
    ct = accumulation_dtype(mu.dtype)
    mu_c, scale_c = mu.to(ct), scale.to(ct)
    std, log_std = std_and_log_std(scale_c, parameterization, shift)
    if sample:
        if eps is None:
            eps = torch.randn(mu.shape, dtype=ct, device=mu.device, generator=generator)
        z = (mu_c + std * eps.to(ct)).to(mu.dtype)
    else:
        z = mu.clone()
    kl_elements = 0.5 * (mu_c * mu_c + std * std - 2.0 * log_std - 1.0)
    return z, reduce_kl(kl_elements.sum(-1), reduction, mu.numel())
