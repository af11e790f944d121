"""nn.Module wrappers of mibcore's operators."""
from mibcore.nn.bottleneck import BottleneckOutput, VariationalBottleneck

__all__ = ["BottleneckOutput", "VariationalBottleneck"]
