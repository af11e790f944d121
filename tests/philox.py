"""Pure-PyTorch mirror of the randomness contract in csrc/include/mibcore/philox.h.

Used by the tests to predict, from a (seed, offset) pair, exactly which eps the fused
backends draw. It runs on int64 tensors (32-bit words kept in the low bits) and is slow;
it exists for verification, not for speed.
"""
import math

import torch

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85


def _mul32(a, b):
    """(high, low) 32-bit words of the 64-bit product a * b for 32-bit words a, b."""
    # Split b into 16-bit halves so that no int64 product overflows.
    b_lo, b_hi = b & 0xFFFF, b >> 16
    p_lo = a * b_lo
    p_hi = a * b_hi
    low = (p_lo + ((p_hi & 0xFFFF) << 16)) & _MASK32
    high = ((p_lo >> 16) + p_hi) >> 16
    return high & _MASK32, low


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on int64 tensors holding 32-bit words; returns (r0, r1, r2, r3)."""
    k0 = torch.as_tensor(k0, dtype=torch.int64)
    k1 = torch.as_tensor(k1, dtype=torch.int64)
    for _ in range(10):
        hi0, lo0 = _mul32(c0, _M0)
        hi1, lo1 = _mul32(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def uniform_from_bits(r):
    """((r >> 8) + 1) * 2^-24 as float32: a uniform in (0, 1]."""
    return ((r >> 8) + 1).to(torch.float32) * 2.0**-24


def _blocks(n, seed, offset, device):
    seed, offset = int(seed) & 0xFFFFFFFFFFFFFFFF, int(offset) & 0xFFFFFFFFFFFFFFFF
    blocks = torch.arange((n + 3) // 4, dtype=torch.int64, device=device)
    return philox4x32_10(
        blocks & _MASK32,
        blocks >> 32,
        torch.full_like(blocks, offset & _MASK32),
        torch.full_like(blocks, offset >> 32),
        seed & _MASK32,
        seed >> 32,
    )


def uniform(n, seed, offset, device="cpu"):
    """The float32 uniforms in (0, 1] of elements 0 .. n-1: element j uses word j % 4 of block j / 4."""
    r = _blocks(n, seed, offset, device)
    return torch.stack([uniform_from_bits(w) for w in r], dim=1).reshape(-1)[:n]


def dropout_keep_mask(shape, rng, keep_prob):
    """The tensor_fusion keep-mask of a [B, N] outer product: uniform <= keep_prob (float32 compare)."""
    seed, offset = (int(v) for v in rng.tolist())
    n = 1
    for size in shape:
        n *= size
    keep = torch.tensor(keep_prob, dtype=torch.float32)
    return (uniform(n, seed, offset) <= keep).reshape(shape)


def normal(n, seed, offset, device="cpu"):
    """The float32 standard normals of elements 0 .. n-1 for the given (seed, offset)."""
    r = _blocks(n, seed, offset, device)
    out = torch.empty(r[0].numel(), 4, dtype=torch.float32, device=device)
    for k, (ra, rb) in enumerate(((r[0], r[1]), (r[2], r[3]))):
        # Box-Muller in float64, rounded once: the fused kernels agree to fp32 rounding.
        rad = torch.sqrt(-2.0 * torch.log(uniform_from_bits(ra).double()))
        angle = 2.0 * math.pi * uniform_from_bits(rb).double()
        out[:, 2 * k] = (rad * torch.cos(angle)).float()
        out[:, 2 * k + 1] = (rad * torch.sin(angle)).float()
    return out.reshape(-1)[:n]


def normal_like(t, rng):
    """eps of the shape of `t` for rng = tensor([seed, offset])."""
    seed, offset = (int(v) for v in rng.tolist())
    return normal(t.numel(), seed, offset, device=t.device).reshape(t.shape)
