"""Drop-in dropout modules on the Philox contract (no Bernoulli tensor, no stored mask)."""
from torch import nn

from mibcore import _checks
from mibcore import functional as MF


class Dropout(nn.Module):
    """A drop-in for nn.Dropout built on mibcore.functional.dropout (identity in eval mode).

    Unlike nn.Dropout it never materializes a mask: the keep decisions come from Philox and the
    backward regenerates them. `inplace` is not offered: the fused kernel writes a new tensor.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _checks.probability("Dropout", "p", p)

    def forward(self, x):
        return MF.dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropoutAdd(nn.Module):
    """x + dropout(h, p): the residual pattern in one pass."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _checks.probability("DropoutAdd", "p", p)

    def forward(self, x, h):
        return MF.dropout_add(x, h, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReLUDropout(nn.Module):
    """dropout(relu(x), p) in one pass (the FFN pattern); its backward needs only the output."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _checks.probability("ReLUDropout", "p", p)

    def forward(self, x):
        return MF.relu_dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
