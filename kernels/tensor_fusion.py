"""Triton kernels of the fused tensor fusion (TFN + Linear) and their host wrappers.

The [B, N] outer product of A = [1; x1], V = [1; x2], T = [1; x3] (two inputs: V = [1]) is
never stored. Tiles follow the (i, j) pairs of the flatten order: within pair p = i * J + j,
columns p * K + k hold A_i V_j T_k, so a tile is a per-row scalar times a row of T.
  forward   grid (B/BLOCK_B, out/BLOCK_O): y += (a_i v_j t_k * mask) @ W[:, pair]^T over pairs
  grad W    grid (out/BLOCK_O, pairs): dW[:, pair] = dY^T @ (a_i v_j t_k * mask) over B
  grad x    grid (B/BLOCK_B, pairs): dZ = dY @ W[:, pair] * mask, contracted into dA, dV, dT
            with atomic adds (distinct addresses within a program)
The dropout scale comes from kernels/_math.py (the Philox contract of csrc/include/philox.h).
"""
import torch
import triton
import triton.language as tl

from mibcore.kernels._launch import device_context
from mibcore.kernels._math import dropout_scale_at
from mibcore.reference import with_ones


@triton.jit
def _pair_tile(a_ptr, v_ptr, t_ptr, rng_ptr, rows, pair, I, J, K, N, b, k, b_ok, k_ok, keep_prob, inv_keep,
               DROPOUT: tl.constexpr):
    """The [BLOCK_B, BLOCK_K] tile of the outer product for pair `pair` (fp32)."""
    i = pair // J
    j = pair % J
    a = tl.load(a_ptr + b * I + i, mask=b_ok, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + b * J + j, mask=b_ok, other=0.0).to(tl.float32)
    mask = b_ok[:, None] & k_ok[None, :]
    t = tl.load(t_ptr + b[:, None] * K + k[None, :], mask=mask, other=0.0).to(tl.float32)
    z = (a * v)[:, None] * t
    if DROPOUT:
        seed = tl.load(rng_ptr)
        offset = tl.load(rng_ptr + 1)
        flat = b[:, None] * N + pair * K + k[None, :]
        z = z * dropout_scale_at(flat, seed, offset, keep_prob, inv_keep)
    return z


@triton.jit
def _forward_kernel(a_ptr, v_ptr, t_ptr, w_ptr, bias_ptr, y_ptr, rng_ptr, B, I, J, K, N, OUT, keep_prob, inv_keep,
                    HAS_BIAS: tl.constexpr, DROPOUT: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr):
    b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    o = tl.program_id(1).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    k = tl.arange(0, BLOCK_K).to(tl.int64)
    b_ok, o_ok, k_ok = b < B, o < OUT, k < K
    acc = tl.zeros([BLOCK_B, BLOCK_O], dtype=tl.float32)
    for pair in range(0, I * J):
        z = _pair_tile(a_ptr, v_ptr, t_ptr, rng_ptr, B, pair, I, J, K, N, b, k, b_ok, k_ok, keep_prob, inv_keep,
                       DROPOUT)
        w = tl.load(w_ptr + o[None, :] * N + pair * K + k[:, None], mask=k_ok[:, None] & o_ok[None, :], other=0.0)
        acc += tl.dot(z.to(w.dtype), w, out_dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + b[:, None] * OUT + o[None, :], acc.to(y_ptr.dtype.element_ty), mask=b_ok[:, None] & o_ok[None, :])


@triton.jit
def _grad_weight_kernel(a_ptr, v_ptr, t_ptr, dy_ptr, dw_ptr, rng_ptr, B, I, J, K, N, OUT, keep_prob, inv_keep,
                        DROPOUT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    pair = tl.program_id(1).to(tl.int64)
    k = tl.arange(0, BLOCK_K).to(tl.int64)
    o_ok, k_ok = o < OUT, k < K
    acc = tl.zeros([BLOCK_O, BLOCK_K], dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        b = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        b_ok = b < B
        z = _pair_tile(a_ptr, v_ptr, t_ptr, rng_ptr, B, pair, I, J, K, N, b, k, b_ok, k_ok, keep_prob, inv_keep,
                       DROPOUT)
        dy = tl.load(dy_ptr + b[:, None] * OUT + o[None, :], mask=b_ok[:, None] & o_ok[None, :], other=0.0)
        acc += tl.dot(tl.trans(dy.to(tl.float32)), z, out_dtype=tl.float32)
    tl.store(dw_ptr + o[:, None] * N + pair * K + k[None, :], acc.to(dw_ptr.dtype.element_ty),
             mask=o_ok[:, None] & k_ok[None, :])


@triton.jit
def _grad_input_kernel(a_ptr, v_ptr, t_ptr, w_ptr, dy_ptr, da_ptr, dv_ptr, dt_ptr, rng_ptr, B, I, J, K, N, OUT,
                       keep_prob, inv_keep, DROPOUT: tl.constexpr,
                       BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr):
    b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    pair = tl.program_id(1).to(tl.int64)
    k = tl.arange(0, BLOCK_K).to(tl.int64)
    b_ok, k_ok = b < B, k < K
    dz = tl.zeros([BLOCK_B, BLOCK_K], dtype=tl.float32)
    for o0 in range(0, OUT, BLOCK_O):
        o = o0 + tl.arange(0, BLOCK_O).to(tl.int64)
        o_ok = o < OUT
        dy = tl.load(dy_ptr + b[:, None] * OUT + o[None, :], mask=b_ok[:, None] & o_ok[None, :], other=0.0)
        w = tl.load(w_ptr + o[:, None] * N + pair * K + k[None, :], mask=o_ok[:, None] & k_ok[None, :], other=0.0)
        dz += tl.dot(dy.to(tl.float32), w.to(tl.float32), out_dtype=tl.float32)
    i = pair // J
    j = pair % J
    mask = b_ok[:, None] & k_ok[None, :]
    if DROPOUT:
        seed = tl.load(rng_ptr)
        offset = tl.load(rng_ptr + 1)
        dz = dz * dropout_scale_at(b[:, None] * N + pair * K + k[None, :], seed, offset, keep_prob, inv_keep)
    a = tl.load(a_ptr + b * I + i, mask=b_ok, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + b * J + j, mask=b_ok, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + b[:, None] * K + k[None, :], mask=mask, other=0.0).to(tl.float32)
    s = tl.sum(dz * t, axis=1)  # sum_k dZ[b, ijk] T[b, k]
    tl.atomic_add(da_ptr + b * I + i, v * s, mask=b_ok)
    tl.atomic_add(dv_ptr + b * J + j, a * s, mask=b_ok)
    tl.atomic_add(dt_ptr + b[:, None] * K + k[None, :], (a * v)[:, None] * dz, mask=mask)


def _padded(inputs):
    """A, V, T = [1; x] factors (fp32, contiguous); two inputs get V = ones [B, 1]."""
    pad = lambda x: with_ones(x).float().contiguous()  # noqa: E731
    A = pad(inputs[0])
    V = pad(inputs[1]) if len(inputs) == 3 else torch.ones(A.shape[0], 1, device=A.device)
    return A, V, pad(inputs[-1])


def _blocks(K, OUT):
    return 16, max(16, triton.next_power_of_2(K)), max(16, min(64, triton.next_power_of_2(OUT)))


def _dropout_args(dropout):
    keep = 1.0 - float(dropout)
    return dropout > 0.0, keep, 1.0 / keep


def forward(inputs, weight, bias, dropout, rng):
    A, V, T = _padded(inputs)
    B, I, J, K = A.shape[0], A.shape[1], V.shape[1], T.shape[1]
    N, OUT = I * J * K, weight.shape[0]
    y = torch.empty(B, OUT, device=weight.device, dtype=weight.dtype)
    if B == 0 or OUT == 0:
        return y
    weight = weight.contiguous()
    BLOCK_B, BLOCK_K, BLOCK_O = _blocks(K, OUT)
    active, keep, inv = _dropout_args(dropout)
    grid = (triton.cdiv(B, BLOCK_B), triton.cdiv(OUT, BLOCK_O))
    with device_context(weight):
        _forward_kernel[grid](A, V, T, weight, bias if bias is not None else weight, y, rng, B, I, J, K, N, OUT,
                              keep, inv, HAS_BIAS=bias is not None, DROPOUT=active, BLOCK_B=BLOCK_B,
                              BLOCK_K=BLOCK_K, BLOCK_O=BLOCK_O)
    return y


def backward(grad_y, inputs, weight, dropout, rng):
    A, V, T = _padded(inputs)
    B, I, J, K = A.shape[0], A.shape[1], V.shape[1], T.shape[1]
    N, OUT = I * J * K, weight.shape[0]
    weight = weight.contiguous()
    dy = grad_y.contiguous()
    grad_weight = torch.zeros_like(weight)
    dA, dV, dT = torch.zeros_like(A), torch.zeros_like(V), torch.zeros_like(T)
    BLOCK_B, BLOCK_K, BLOCK_O = _blocks(K, OUT)
    active, keep, inv = _dropout_args(dropout)
    if B > 0 and OUT > 0:
        with device_context(weight):
            _grad_weight_kernel[(triton.cdiv(OUT, BLOCK_O), I * J)](
                A, V, T, dy, grad_weight, rng, B, I, J, K, N, OUT, keep, inv, DROPOUT=active,
                BLOCK_B=BLOCK_B, BLOCK_K=BLOCK_K, BLOCK_O=BLOCK_O)
            _grad_input_kernel[(triton.cdiv(B, BLOCK_B), I * J)](
                A, V, T, weight, dy, dA, dV, dT, rng, B, I, J, K, N, OUT, keep, inv, DROPOUT=active,
                BLOCK_B=BLOCK_B, BLOCK_K=BLOCK_K, BLOCK_O=BLOCK_O)
    unpad = lambda g, x: g[:, 1:].to(x.dtype).contiguous()  # noqa: E731
    grads = [unpad(dA, inputs[0]), unpad(dT, inputs[-1])] if len(inputs) == 2 else [
        unpad(dA, inputs[0]), unpad(dV, inputs[1]), unpad(dT, inputs[2])]
    return grads, grad_weight, grad_y.sum(0).to(weight.dtype)
