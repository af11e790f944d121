"""Drop-in dropout modules on the Philox contract (no Bernoulli tensor, no stored mask)."""
from torch import nn

from mibcore import _checks
from mibcore import functional as MF


class _DropoutModule(nn.Module):
    """A module holding a dropout probability p in [0, 1); the subclass says what it applies."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _checks.probability(type(self).__name__, "p", p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(_DropoutModule):
    """A drop-in for nn.Dropout built on mibcore.functional.dropout (identity in eval mode).

    Unlike nn.Dropout it never materializes a mask: the keep decisions come from Philox and the
    backward regenerates them. `inplace` is not offered: the fused kernel writes a new tensor.
    """

    def forward(self, x):
        return MF.dropout(x, self.p, training=self.training)


class DropoutAdd(_DropoutModule):
    """x + dropout(h, p): the residual pattern in one pass."""

    def forward(self, x, h):
        return MF.dropout_add(x, h, self.p, training=self.training)


class ReLUDropout(_DropoutModule):
    """dropout(relu(x), p) in one pass (the FFN pattern); its backward needs only the output."""

    def forward(self, x):
        return MF.relu_dropout(x, self.p, training=self.training)
