"""The paper's C-MIB written plainly in PyTorch: the baseline of the training-step benchmarks.

It follows the formulation of the MIB authors' code (cmib.py with MulT's encoder; see
shared/reference/mib-paper-and-code.md sections 1.1-1.5), with stock PyTorch modules and no
mibcore code, so that a benchmark against it measures what mibcore changes:
- Conv1d projections (k=3, pad 1, no bias) over all T steps of text, audio and visual;
- MulT encoders for audio and visual over the full sequence: input * sqrt(d), sinusoidal
  positions masked where channel 0 is 0, embedding dropout, pre-LN layers of
  nn.MultiheadAttention + ReLU FFN with nn.Dropout-style F.dropout, a final LayerNorm; the
  last time step is read out;
- four IB heads: Linear(d, hidden) + ReLU, separate fc_mu and fc_std, std = softplus(raw - 5),
  z = mu + std * randn_like(std), KL = 0.5 * mean(mu^2 + std^2 - 2 log std - 1);
- concat fusion (cat -> Linear(3d, d) -> ReLU) or the paper's 3-layer tensor fusion head;
- the loss: sum of unimodal (L1 + beta KL), the fused (L1 + beta KL), and the final L1 again.
Parameters keep the nn defaults (the point is the formulation, not the numbers).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_table(positions, dim):
    """fairseq's sinusoidal embedding rows for `positions` (1-based; row 0 is padding = 0)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(positions + 1, dtype=torch.float32)[:, None] * freqs[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(positions + 1, 1)], dim=1)
    table[0] = 0
    return table


class MulTLayer(nn.Module):
    """One pre-LN MulT layer: x + drop(attn(LN x)); x + drop(fc2(drop(relu(fc1(LN x)))))."""

    def __init__(self, d, heads, attn_dropout, relu_dropout, res_dropout):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=attn_dropout)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(d), nn.LayerNorm(d)])
        self.relu_dropout = relu_dropout
        self.res_dropout = res_dropout

    def forward(self, x):  # [T, B, d]
        h = self.layer_norms[0](x)
        # need_weights=True: MulT's attention materializes the [B*H, T, T] probabilities, drops
        # them out and returns their head average; this is nn.MultiheadAttention's same path.
        h, _ = self.self_attn(h, h, h, need_weights=True)
        x = x + F.dropout(h, self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.layer_norms[1](x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class MulTEncoder(nn.Module):
    def __init__(self, d=50, heads=5, layers=3, attn_dropout=0.5, relu_dropout=0.3, res_dropout=0.3,
                 embed_dropout=0.2, max_positions=512):
        super().__init__()
        self.d = d
        self.embed_dropout = embed_dropout
        self.register_buffer("positions", sinusoidal_table(max_positions, d), persistent=False)
        self.layers = nn.ModuleList(
            [MulTLayer(d, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)])
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x):  # [T, B, d] -> [T, B, d]
        T = x.shape[0]
        # make_positions(padding_idx=0): position t+1 where channel 0 is non-zero, else row 0 (zeros).
        index = torch.arange(1, T + 1, device=x.device)[:, None] * (x[:, :, 0] != 0)
        x = math.sqrt(self.d) * x + self.positions[index]
        x = F.dropout(x, self.embed_dropout, self.training)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class IBHead(nn.Module):
    """encoder -> (fc_mu, fc_std) -> softplus(raw - 5) -> reparameterise; returns (z, kl)."""

    def __init__(self, d=50, hidden=1024):
        super().__init__()
        self.encoder = nn.Linear(d, hidden)
        self.fc_mu = nn.Linear(hidden, d)
        self.fc_std = nn.Linear(hidden, d)

    def forward(self, x):
        h = F.relu(self.encoder(x))
        mu = self.fc_mu(h)
        std = F.softplus(self.fc_std(h) - 5, beta=1)
        z = mu + std * torch.randn_like(std)
        kl = 0.5 * torch.mean(mu.pow(2) + std.pow(2) - 2 * std.log() - 1)
        return z, kl


class ConcatHead(nn.Module):
    def __init__(self, d=50):
        super().__init__()
        self.linear = nn.Linear(3 * d, d)

    def forward(self, l, a, v):
        return F.relu(self.linear(torch.cat([l, a, v], dim=1)))


class TensorFusionHead(nn.Module):
    """cmib.py's `tensor`: outer product of [1; x] by two bmm's, dropout 0.5, three tanh layers.

    The first input is the most significant in the flattened product (the order mibcore's
    TensorFusion documents for loading the MIB code's post_fusion_layer_1); the order does not
    change the cost."""

    def __init__(self, d=50, dropout=0.5):
        super().__init__()
        self.dropout = dropout
        self.post_fusion_layer_1 = nn.Linear((d + 1) ** 3, d)
        self.post_fusion_layer_2 = nn.Linear(d, d)
        self.post_fusion_layer_3 = nn.Linear(d, d)

    def forward(self, x1, x2, x3):
        B = x1.shape[0]
        ones = torch.ones(B, 1, dtype=x1.dtype, device=x1.device)
        h1, h2, h3 = (torch.cat([ones, x], dim=1) for x in (x1, x2, x3))
        outer = torch.bmm(h1.unsqueeze(2), h2.unsqueeze(1)).view(B, -1, 1)
        fused = torch.bmm(outer, h3.unsqueeze(1)).view(B, -1)
        fused = F.dropout(fused, self.dropout, self.training)
        y = torch.tanh(self.post_fusion_layer_1(fused))
        y = torch.tanh(self.post_fusion_layer_2(y))
        return torch.tanh(self.post_fusion_layer_3(y))


class PaperCMIB(nn.Module):
    """C-MIB: unimodal IBs on the encoders' last steps, fusion, a multimodal IB, a regressor.

    forward(text [B, T, 768], audio [B, T, 74], visual [B, T, 47]) -> dict(pred, unimodal_pred, kl).
    """

    def __init__(self, fusion="concat", text_dim=768, audio_dim=74, visual_dim=47, d=50, hidden=1024,
                 beta=1e-3):
        super().__init__()
        self.beta = beta
        conv = lambda n: nn.Conv1d(n, d, kernel_size=3, padding=1, bias=False)  # noqa: E731
        self.proj_l, self.proj_a, self.proj_v = conv(text_dim), conv(audio_dim), conv(visual_dim)
        self.trans_a, self.trans_v = MulTEncoder(d), MulTEncoder(d)
        self.ib_l, self.ib_a, self.ib_v, self.ib = (IBHead(d, hidden) for _ in range(4))
        self.decoder_l, self.decoder_a, self.decoder_v, self.decoder = (nn.Linear(d, 1) for _ in range(4))
        if fusion == "concat":
            self.fusion = ConcatHead(d)
        elif fusion == "tensor":
            self.fusion = TensorFusionHead(d)
        else:
            raise ValueError(f"fusion must be 'concat' or 'tensor', got {fusion!r}")

    def forward(self, text, audio, visual):
        x_l = self.proj_l(text.transpose(1, 2))[:, :, -1]
        x_a = self.trans_a(self.proj_a(audio.transpose(1, 2)).permute(2, 0, 1))[-1]
        x_v = self.trans_v(self.proj_v(visual.transpose(1, 2)).permute(2, 0, 1))[-1]
        (z_l, kl_l), (z_a, kl_a), (z_v, kl_v) = self.ib_l(x_l), self.ib_a(x_a), self.ib_v(x_v)
        # The paper's tensor head takes (audio, video, text), audio most significant; concat (l, a, v).
        fused = self.fusion(z_a, z_v, z_l) if isinstance(self.fusion, TensorFusionHead) else self.fusion(z_l, z_a, z_v)
        z, kl = self.ib(fused)
        return {
            "pred": self.decoder(z),
            "unimodal_pred": {"text": self.decoder_l(z_l), "audio": self.decoder_a(z_a), "visual": self.decoder_v(z_v)},
            "kl": [kl_l, kl_a, kl_v, kl],
        }

    def loss(self, out, label):
        l1 = lambda pred: F.l1_loss(pred.view(-1), label.view(-1))  # noqa: E731
        loss = sum(l1(p) for p in out["unimodal_pred"].values()) + self.beta * sum(out["kl"])
        return loss + l1(out["pred"]) + l1(out["pred"])  # the fused term's L1, then the paper's duplicate
