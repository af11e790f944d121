"""Multi-head self-attention with its dropout on the Philox contract (no Bernoulli tensor).

A drop-in for the self-attention use of nn.MultiheadAttention(batch_first=True): the same
parameters (in_proj_weight [3d, d], in_proj_bias [3d], out_proj.weight/bias), so its
state_dicts load unchanged. The probabilities' dropout is mibcore.functional.dropout, applied
to the [B * heads, T_query, T] probabilities in that row-major order; in eval mode (or p = 0)
the result equals nn.MultiheadAttention's. The math is plain batched GEMMs and a softmax: no
masks (the MIB encoders use none), hence none of SDPA's math-path mask checks.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from mibcore import _checks
from mibcore import functional as MF


class MultiheadAttention(nn.Module):
    """Self-attention over x [B, T, d] -> [B, T, d]; with `last_only`, only the last position
    queries (keys and values still come from every position) -> [B, 1, d]."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = _checks.probability("MultiheadAttention", "dropout", dropout)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        # nn.MultiheadAttention's initialization.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, t, n):
        """[B, T, n * d] -> n tensors [B * heads, T, head_dim] (one copy for all n)."""
        B, T, _ = t.shape
        t = t.view(B, T, n, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return t.reshape(n, B * self.num_heads, T, self.head_dim).unbind(0)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        B, T, d = x.shape
        w, b = self.in_proj_weight, self.in_proj_bias
        if last_only:
            (q,) = self._heads(F.linear(x[:, -1:], w[:d], b[:d]), 1)  # (a view: T_query = 1)
            k, v = self._heads(F.linear(x, w[d:], b[d:]), 2)
        else:
            q, k, v = self._heads(F.linear(x, w, b), 3)
        # The scale on q, the smaller operand (T_query x head_dim, not T_query x T).
        scores = torch.bmm(q * (1.0 / math.sqrt(self.head_dim)), k.transpose(1, 2))
        probs = MF.dropout(torch.softmax(scores, dim=-1), self.dropout, training=self.training)
        out = torch.bmm(probs, v)  # [B * heads, T_query, head_dim]
        # (T_query explicit, not -1: with B = 0 a -1 is ambiguous and the view fails)
        t_query = out.shape[1]
        out = out.view(B, self.num_heads, t_query, self.head_dim).transpose(1, 2).reshape(B, t_query, d)
        return self.out_proj(out)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"
