"""Unimodal encoders of MIB: Conv1d projections and the MulT-style transformer encoder."""
import math

import torch
from torch import nn


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
    """Pre-LayerNorm transformer layer (MulT): attention and a 4x ReLU FFN, each residual."""

    def __init__(self, dim, heads, attn_dropout, relu_dropout, res_dropout):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attn_dropout)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.relu_dropout = nn.Dropout(relu_dropout)
        self.res_dropout = nn.Dropout(res_dropout)

    def forward(self, x):  # x: [T, B, dim]
        h = self.norm_attn(x)
        h, _ = self.attn(h, h, h, need_weights=False)
        x = x + self.res_dropout(h)
        h = self.fc2(self.relu_dropout(torch.relu(self.fc1(self.norm_ffn(x)))))
        return x + self.res_dropout(h)


class TransformerEncoder(nn.Module):
    """MulT's encoder: input scaled by sqrt(d), sinusoidal positions (skipped where the input's
    channel 0 is exactly 0, i.e. padding), embedding dropout, pre-LN layers, a final LayerNorm."""

    def __init__(self, dim=50, heads=5, layers=3, attn_dropout=0.5, relu_dropout=0.3, res_dropout=0.3,
                 embed_dropout=0.2):
        super().__init__()
        self.dim = dim
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            [EncoderLayer(dim, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):  # x: [T, B, dim] -> [T, B, dim]
        T = x.shape[0]
        not_pad = (x[:, :, 0] != 0).unsqueeze(-1).to(x.dtype)
        x = math.sqrt(self.dim) * x + not_pad * sinusoidal_positions(T, self.dim, x.device)[:, None, :].to(x.dtype)
        x = self.embed_dropout(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class Projection(nn.Module):
    """Conv1d(in, d, kernel 3, padding 1, no bias) over time: [B, T, in] -> [B, T, d]."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.conv = nn.Conv1d(in_features, out_features, kernel_size=3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(x.transpose(1, 2)).transpose(1, 2)
