"""Unimodal encoders of MIB: Conv1d projections and the MulT-style transformer encoder.

Every dropout goes through mibcore's operators (mibcore.nn.Dropout, DropoutAdd, ReLUDropout and
the attention's probabilities in mibcore.nn.MultiheadAttention): no Bernoulli tensor, no stored
mask. `last_only` computes only what a last-time-step readout needs (see each forward); the
result equals the last position of the full computation.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from mibcore.nn import Dropout, DropoutAdd, MultiheadAttention, ReLUDropout


def sinusoidal_positions(length, dim, device=None):
    """Sinusoidal position embeddings [length, dim] for positions 1 .. length (fairseq / MulT)."""
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -scale)
    pos = torch.arange(1, length + 1, dtype=torch.float32, device=device)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(pos), torch.cos(pos)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(length, 1, device=device)], dim=1)
    return emb


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer layer (MulT): attention and a 4x ReLU FFN, each residual.
    Batch-first: x [B, T, dim]."""

    def __init__(self, dim, heads, attn_dropout, relu_dropout, res_dropout):
        super().__init__()
        self.attn = MultiheadAttention(dim, heads, dropout=attn_dropout)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.relu_dropout = ReLUDropout(relu_dropout)
        self.res_dropout = DropoutAdd(res_dropout)

    def forward(self, x, last_only=False):
        """[B, T, dim] -> [B, T, dim]; with `last_only`, [B, 1, dim]: the last position's query,
        residuals, FFN and norms (keys and values from every position)."""
        h = self.norm_attn(x)
        if last_only:
            x = x[:, -1:]
        x = self.res_dropout(x, self.attn(h, last_only=last_only))
        return self.res_dropout(x, self.fc2(self.relu_dropout(self.fc1(self.norm_ffn(x)))))


# Positions computed once per encoder, up to this length (a non-persistent buffer: it follows
# .to(device) but stays out of state_dicts); longer inputs compute theirs at each forward.
CACHED_POSITIONS = 1024


class TransformerEncoder(nn.Module):
    """MulT's encoder: input scaled by sqrt(d), sinusoidal positions (skipped where the input's
    channel 0 is exactly 0, i.e. padding), embedding dropout, pre-LN layers, a final LayerNorm.
    The positions of the first CACHED_POSITIONS time steps are computed once (a buffer, sliced
    per forward: the same values as computing them for each length; no launches per forward).

    Input and output are [T, B, dim] (MulT's layout), or [B, T, dim] with `batch_first` (what
    the models use: it saves the transposes around every attention)."""

    def __init__(self, dim=50, heads=5, layers=3, attn_dropout=0.5, relu_dropout=0.3, res_dropout=0.3,
                 embed_dropout=0.2, batch_first=False):
        super().__init__()
        self.dim = dim
        self.batch_first = batch_first
        self.embed_dropout = Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            [EncoderLayer(dim, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("positions", sinusoidal_positions(CACHED_POSITIONS, dim), persistent=False)

    def _positions(self, length, x):
        if length <= self.positions.shape[0]:
            return self.positions[:length].to(x.dtype)  # (a view, no copy, for float32)
        return sinusoidal_positions(length, self.dim, x.device).to(x.dtype)

    def forward(self, x, last_only=False):
        """Every position's output; with `last_only`, the last position's only (time dim of
        size 1): the last layer then computes its query, FFN and norms for that position."""
        if not self.batch_first:
            x = x.transpose(0, 1)
        T = x.shape[1]
        not_pad = (x[:, :, :1] != 0).to(x.dtype)
        x = math.sqrt(self.dim) * x + not_pad * self._positions(T, x)
        x = self.embed_dropout(x)
        for i, layer in enumerate(self.layers):
            x = layer(x, last_only=last_only and i == len(self.layers) - 1)
        if last_only and not len(self.layers):
            x = x[:, -1:]
        x = self.norm(x)
        return x if self.batch_first else x.transpose(0, 1)


class Projection(nn.Module):
    """Conv1d(in, d, kernel 3, padding 1, no bias) over time: [B, T, in] -> [B, T, d]."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.conv = nn.Conv1d(in_features, out_features, kernel_size=3, padding=1, bias=False)

    def forward(self, x, last_only=False):
        """[B, T, d], contiguous; with `last_only`, [B, 1, d]: the convolution at t = T - 1 only."""
        if last_only:
            # Output T-1 sees x[T-2] (tap 0) and x[T-1] (tap 1); tap 2 falls on the padding.
            k = min(x.shape[1], 2)
            weight = self.conv.weight[:, :, 2 - k : 2].transpose(1, 2).reshape(self.conv.out_channels, -1)
            # (k * in explicit, not -1: with B = 0 a -1 is ambiguous and the reshape fails)
            return F.linear(x[:, -k:].reshape(x.shape[0], 1, k * x.shape[2]), weight)
        # (contiguous: the conv's [B, d, T] output transposed would make every later op copy)
        return self.conv(x.transpose(1, 2)).transpose(1, 2).contiguous()
