"""Closed-form float64 formulas, written independently of mibcore.reference."""
import math

import torch

def std_float64(scale, parameterization, shift):
    s = scale.double()
    if parameterization == "softplus":
        x = s + shift
        # log(1 + e^x) without overflow, exact in float64 for the range tested.
        return torch.where(x > 30, x, torch.log1p(torch.exp(torch.clamp(x, max=30))))
    if parameterization == "logvar":
        return torch.exp(s / 2)
    return s


def log_std_float64(scale, parameterization, shift):
    s = scale.double()
    if parameterization == "softplus":
        x = s + shift
        sp = std_float64(scale, parameterization, shift)
        # For x < -700, e^x underflows float64 too; there log softplus(x) = x.
        return torch.where(x < -700, x, torch.log(torch.where(x < -700, torch.ones_like(sp), sp)))
    if parameterization == "logvar":
        return s / 2
    return torch.log(s)


def kl_rows_float64(mu, scale, parameterization, shift):
    std = std_float64(scale, parameterization, shift)
    log_std = log_std_float64(scale, parameterization, shift)
    m = mu.double()
    return (0.5 * (m * m + std * std - 2 * log_std - 1)).sum(-1)


def reduce(kl_rows, reduction, numel):
    if reduction == "none":
        return kl_rows
    if reduction == "sum":
        return kl_rows.sum()
    if reduction == "mean":
        return kl_rows.sum() / numel
    return kl_rows.sum() / kl_rows.numel()


def grads_float64(mu, scale, eps, parameterization, shift, grad_z, grad_kl_rows):
    """Analytic d/dmu and d/dscale of <grad_z, z> + <grad_kl_rows, kl_rows> given eps."""
    m, s, e = mu.double(), scale.double(), eps.double()
    gz, gk = grad_z.double(), grad_kl_rows.double().unsqueeze(-1)
    std = std_float64(scale, parameterization, shift)
    if parameterization == "softplus":
        x = s + shift
        dstd = torch.sigmoid(x)
        dlog = torch.where(x < -700, torch.ones_like(x), dstd / torch.where(x < -700, torch.ones_like(std), std))
    elif parameterization == "logvar":
        dstd, dlog = std / 2, torch.full_like(s, 0.5)
    else:
        dstd, dlog = torch.ones_like(s), 1 / s
    grad_mu = gz + gk * m
    grad_scale = gz * e * dstd + gk * (std * dstd - dlog)
    return grad_mu, grad_scale


def ks_statistic_normal(samples):
    """Kolmogorov-Smirnov distance between the samples and N(0, 1)."""
    x, _ = torch.sort(samples.double().flatten())
    n = x.numel()
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - cdf
    lower = cdf - torch.arange(0, n, dtype=torch.float64) / n
    return max(upper.max().item(), lower.max().item())


def ks_critical(n, alpha=1e-3):
    return math.sqrt(-0.5 * math.log(alpha / 2)) / math.sqrt(n)
