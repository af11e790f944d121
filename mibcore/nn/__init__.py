"""nn.Module wrappers of mibcore's operators: the bottleneck head and the fusion methods."""
from mibcore.nn.bottleneck import BottleneckOutput, VariationalBottleneck
from mibcore.nn.fusion import (
    FUSIONS,
    AdditionFusion,
    ConcatFusion,
    GraphFusion,
    LowRankFusion,
    MultiplicationFusion,
    PoEFusion,
    TensorFusion,
    build_fusion,
)

__all__ = [
    "FUSIONS",
    "AdditionFusion",
    "BottleneckOutput",
    "ConcatFusion",
    "GraphFusion",
    "LowRankFusion",
    "MultiplicationFusion",
    "PoEFusion",
    "TensorFusion",
    "VariationalBottleneck",
    "build_fusion",
]
