"""Reference (pure PyTorch) tensor fusion (TFN) and low-rank fusion (LMF).

Tensor fusion follows the TFN code of the MIB repo and MMSA: prepend a constant 1 to each
input, take the outer product, flatten row-major with the first input most significant
(`einsum('bi,bj,bk->bijk').reshape(B, -1)`), apply inverted dropout to that vector, then a
Linear layer. Low-rank fusion follows the LMF code: per-modality factors [rank, d_i + 1, out],
elementwise product over modalities, a weighted sum over rank, plus a bias.
"""
import torch
import torch.nn.functional as F


def with_ones(x):
    """[B, d] -> [B, d + 1] with the constant 1 at index 0."""
    return torch.cat([torch.ones_like(x[:, :1]), x], dim=1)


def outer_product(inputs):
    """Flattened outer product of the inputs with 1 prepended: [B, prod(d_i + 1)]."""
    fused = with_ones(inputs[0])
    for x in inputs[1:]:
        factor = with_ones(x)
        size = fused.shape[1] * factor.shape[1]  # explicit: -1 is ambiguous for an empty batch
        fused = torch.einsum("bi,bj->bij", fused, factor).reshape(fused.shape[0], size)
    return fused


def tensor_fusion(inputs, weight, bias=None, *, dropout=0.0, training=True, generator=None, keep_mask=None):
    """linear(dropout(outer_product(inputs)), weight, bias).

    `keep_mask` (optional, bool [B, prod(d_i + 1)]) replaces the Bernoulli draw, for tests.
    """
    fused = outer_product(inputs)
    if training and dropout > 0.0:
        if keep_mask is None:
            keep_mask = torch.empty_like(fused).bernoulli_(1.0 - dropout, generator=generator).bool()
        fused = fused * keep_mask.to(fused.dtype) / (1.0 - dropout)
    return F.linear(fused, weight, bias)


def low_rank_fusion(inputs, factors, rank_weights, bias):
    """LMF: sum_r w_r * prod_i (with_ones(x_i) @ factors[i][r]) + bias -> [B, out].

    factors[i]: [rank, d_i + 1, out]; rank_weights: [rank] or [1, rank]; bias: [out] or [1, out].
    """
    product = None
    for x, factor in zip(inputs, factors):
        projected = torch.matmul(with_ones(x), factor)  # [rank, B, out]
        product = projected if product is None else product * projected
    fused = torch.einsum("r,rbo->bo", rank_weights.reshape(-1), product)
    return fused + bias.reshape(-1)
