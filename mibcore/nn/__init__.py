"""nn.Module wrappers of mibcore's operators: the bottleneck head, the fusion methods, dropout,
and attention with its dropout on the Philox contract."""
from mibcore.nn.attention import MultiheadAttention
from mibcore.nn.bottleneck import BottleneckOutput, VariationalBottleneck
from mibcore.nn.dropout import Dropout, DropoutAdd, ReLUDropout
from mibcore.nn.fusion import (
    FUSIONS,
    AdditionFusion,
    ConcatFusion,
    GraphFusion,
    LowRankFusion,
    MultiplicationFusion,
    PoEFusion,
    TensorFusion,
    TensorFusionHead,
    build_fusion,
)

__all__ = [
    "FUSIONS",
    "AdditionFusion",
    "BottleneckOutput",
    "ConcatFusion",
    "Dropout",
    "DropoutAdd",
    "GraphFusion",
    "LowRankFusion",
    "MultiheadAttention",
    "MultiplicationFusion",
    "PoEFusion",
    "ReLUDropout",
    "TensorFusion",
    "TensorFusionHead",
    "VariationalBottleneck",
    "build_fusion",
]
