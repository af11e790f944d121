"""The reference backend: pure PyTorch, faithful to the paper's formulas.

It is the oracle of every test and the baseline of every benchmark; nothing else in
mibcore re-implements these formulas in PyTorch.
"""
from mibcore.reference.dropout import dropout, dropout_add, relu_dropout
from mibcore.reference.fusion import low_rank_fusion, outer_product, tensor_fusion, with_ones
from mibcore.reference.reparameterize_kl import (
    PARAMETERIZATIONS,
    REDUCTIONS,
    reduce_kl,
    reparameterize_kl,
    std_and_log_std,
)

__all__ = [
    "PARAMETERIZATIONS",
    "REDUCTIONS",
    "dropout",
    "dropout_add",
    "low_rank_fusion",
    "outer_product",
    "reduce_kl",
    "relu_dropout",
    "reparameterize_kl",
    "std_and_log_std",
    "tensor_fusion",
    "with_ones",
]
