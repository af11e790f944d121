"""Reference (pure PyTorch) dropout, as nn.Dropout computes it: a Bernoulli keep mask,
x * (mask / (1 - p)). `keep_mask` (optional, bool of x's shape) replaces the draw, for tests."""
import torch


def dropout(x, p, *, generator=None, keep_mask=None):
    if keep_mask is None:
        keep_mask = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * (keep_mask.to(x.dtype) / (1.0 - p))


def dropout_add(x, h, p, *, generator=None, keep_mask=None):
    return x + dropout(h, p, generator=generator, keep_mask=keep_mask)


def relu_dropout(x, p, *, generator=None, keep_mask=None):
    return dropout(torch.relu(x), p, generator=generator, keep_mask=keep_mask)
