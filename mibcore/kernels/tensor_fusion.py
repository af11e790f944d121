"""Triton kernels of the fused tensor fusion (TFN + Linear) and their host wrappers.

The [B, N] outer product of A = [1; x1], V = [1; x2], T = [1; x3] (two inputs: V = [1]) is
never stored. Tiles follow the (i, j) pairs of the flatten order: within pair p = i * J + j,
columns p * K + k hold A_i V_j T_k, so a tile is a per-row scalar times a chunk of T's row
(BLOCK_K columns, at most _MAX_BLOCK_K: a last input of any width loops over K). A "unit" of
the contraction is one (pair, K chunk). Every grid is one-dimensional (axis 0 admits 2^31 - 1
programs) and sized to at least two programs per SM; nothing is reduced with atomics, so every
kernel here is deterministic:
  forward   programs (b tile, out tile, split): split s sums its range of units into
            partial[s] (fp32, fp64 for fp64); the host sums the partials in a fixed order.
  grad W    programs (out tile, unit): dW[:, unit] = dY^T @ (a_i v_j t_k * mask) over all of B.
  grad x    programs (b tile, K chunk, pair group): dZ = dY @ W[:, unit] * mask for each pair of
            the group; dT partial[group] = sum_pairs a_i v_j dZ, S[chunk, b, pair] = sum_k dZ t_k;
            the host sums the partials and contracts S with V and A into dA and dV.
Operands of tl.dot are the weight's dtype (bf16/fp16 on tensor cores, fp64 in fp64), the
accumulator fp32 (fp64 for fp64); fp32 products are IEEE fp32 unless
torch.backends.cuda.matmul.allow_tf32 is set (then TF32). The dropout scale comes from
mibcore/kernels/_math.py (the Philox contract of csrc/include/philox.h).
"""
import torch
import triton
import triton.language as tl

from mibcore.constants import accumulation_dtype
from mibcore.kernels._launch import dot_precision, double_bits, launch, target_programs
from mibcore.kernels._math import dropout_scale_at, exact_scalar, mma
from mibcore.reference import with_ones

# Tiles of at most 32 along B, K and out: larger ones spill registers (the Philox keep bits of a
# [B, K] tile, and fp32 IEEE dots, which run on the FMA units with their operands in registers),
# and next_power_of_2(K) uncapped (K 300, 600) needs more shared memory than sm_90 has.
_MAX_BLOCK_B = 32
_MAX_BLOCK_K = 32
_MAX_BLOCK_O = 32


@triton.jit
def _pair_tile(a_ptr, v_ptr, t_ptr, rng_ptr, pair, I, J, K, N, b, k, b_ok, k_ok, keep_prob, inv_keep,
               DROPOUT: tl.constexpr):
    """The [BLOCK_B, BLOCK_K] tile of the outer product at pair `pair`, columns k (A's dtype)."""
    a = tl.load(a_ptr + b * I + pair // J, mask=b_ok, other=0.0)
    v = tl.load(v_ptr + b * J + pair % J, mask=b_ok, other=0.0)
    mask = b_ok[:, None] & k_ok[None, :]
    t = tl.load(t_ptr + b[:, None] * K + k[None, :], mask=mask, other=0.0)
    z = (a * v)[:, None] * t
    if DROPOUT:
        seed = tl.load(rng_ptr)
        offset = tl.load(rng_ptr + 1)
        z = z * dropout_scale_at(_column(b[:, None], N, pair, K, k[None, :]), seed, offset, keep_prob, inv_keep)
    return z


@triton.jit
def _column(row, N, pair, K, k):
    """row * N + pair * K + k in int64 (row is int64; pair, k int32)."""
    return row * N + tl.cast(pair, tl.int64) * K + k


@triton.jit(do_not_specialize=["inv_keep_bits"])
def _forward_kernel(a_ptr, v_ptr, t_ptr, w_ptr, part_ptr, rng_ptr, B, I, J, K, N, OUT, units_per_split,
                    keep_prob, inv_keep, inv_keep_bits, DROPOUT: tl.constexpr, F64: tl.constexpr,
                    PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                    BLOCK_O: tl.constexpr):
    acc_t = part_ptr.dtype.element_ty
    inv = exact_scalar(inv_keep, inv_keep_bits, F64)
    # Tile and unit numbers are int32 (64-bit division is a subroutine call, which spills);
    # element offsets are int64 (weights may exceed 2^31 elements).
    pid = tl.program_id(0)
    n_b = tl.cdiv(B, BLOCK_B)
    n_o = tl.cdiv(OUT, BLOCK_O)
    chunks = tl.cdiv(K, BLOCK_K)
    # b tiles fastest: the programs that read one weight tile run side by side (L2 hits).
    split = pid // (n_b * n_o)
    b = ((pid % n_b) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    o = ((pid // n_b % n_o) * BLOCK_O + tl.arange(0, BLOCK_O)).to(tl.int64)
    b_ok, o_ok = b < B, o < OUT
    u0 = split * units_per_split
    u1 = tl.minimum(u0 + units_per_split, I * J * chunks)
    acc = tl.zeros([BLOCK_B, BLOCK_O], dtype=acc_t)
    for u in range(u0, u1):
        pair = u // chunks
        k = (u % chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = k < K
        z = _pair_tile(a_ptr, v_ptr, t_ptr, rng_ptr, pair, I, J, K, N, b, k, b_ok, k_ok, keep_prob, inv, DROPOUT)
        w = tl.load(w_ptr + _column(o[None, :], N, pair, K, k[:, None]), mask=k_ok[:, None] & o_ok[None, :],
                    other=0.0)
        acc += mma(z.to(w.dtype), w, acc_t, PRECISION)
    tl.store(part_ptr + (split * B + b[:, None]) * OUT + o[None, :], acc, mask=b_ok[:, None] & o_ok[None, :])


@triton.jit(do_not_specialize=["inv_keep_bits"])
def _grad_weight_kernel(a_ptr, v_ptr, t_ptr, dy_ptr, dw_ptr, rng_ptr, B, I, J, K, N, OUT,
                        keep_prob, inv_keep, inv_keep_bits, DROPOUT: tl.constexpr, F64: tl.constexpr,
                        PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                        BLOCK_O: tl.constexpr):
    acc_t = a_ptr.dtype.element_ty
    inv = exact_scalar(inv_keep, inv_keep_bits, F64)
    pid = tl.program_id(0)
    n_o = tl.cdiv(OUT, BLOCK_O)
    chunks = tl.cdiv(K, BLOCK_K)
    unit = pid // n_o
    pair = unit // chunks
    o = ((pid % n_o) * BLOCK_O + tl.arange(0, BLOCK_O)).to(tl.int64)
    k = (unit % chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
    o_ok, k_ok = o < OUT, k < K
    acc = tl.zeros([BLOCK_O, BLOCK_K], dtype=acc_t)
    for b0 in range(0, B, BLOCK_B):
        b = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        b_ok = b < B
        z = _pair_tile(a_ptr, v_ptr, t_ptr, rng_ptr, pair, I, J, K, N, b, k, b_ok, k_ok, keep_prob, inv, DROPOUT)
        dy = tl.load(dy_ptr + b[:, None] * OUT + o[None, :], mask=b_ok[:, None] & o_ok[None, :], other=0.0)
        acc += mma(tl.trans(dy), z.to(dy.dtype), acc_t, PRECISION)
    tl.store(dw_ptr + _column(o[:, None], N, pair, K, k[None, :]), acc.to(dw_ptr.dtype.element_ty),
             mask=o_ok[:, None] & k_ok[None, :])


@triton.jit(do_not_specialize=["inv_keep_bits"])
def _grad_input_kernel(a_ptr, v_ptr, t_ptr, w_ptr, dy_ptr, dt_part_ptr, s_part_ptr, rng_ptr, B, I, J, K, N, OUT,
                       pairs_per_group, keep_prob, inv_keep, inv_keep_bits, DROPOUT: tl.constexpr,
                       F64: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_O: tl.constexpr):
    acc_t = a_ptr.dtype.element_ty
    inv = exact_scalar(inv_keep, inv_keep_bits, F64)
    pid = tl.program_id(0)
    n_b = tl.cdiv(B, BLOCK_B)
    chunks = tl.cdiv(K, BLOCK_K)
    chunk = pid // n_b % chunks
    group = pid // (n_b * chunks)
    b = ((pid % n_b) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    k = chunk * BLOCK_K + tl.arange(0, BLOCK_K)
    b_ok, k_ok = b < B, k < K
    mask = b_ok[:, None] & k_ok[None, :]
    pairs = I * J
    p0 = group * pairs_per_group
    t = tl.load(t_ptr + b[:, None] * K + k[None, :], mask=mask, other=0.0)
    dt = tl.zeros([BLOCK_B, BLOCK_K], dtype=acc_t)
    for pair in range(p0, tl.minimum(p0 + pairs_per_group, pairs)):
        dz = tl.zeros([BLOCK_B, BLOCK_K], dtype=acc_t)
        for o0 in range(0, OUT, BLOCK_O):
            o = o0 + tl.arange(0, BLOCK_O).to(tl.int64)
            o_ok = o < OUT
            dy = tl.load(dy_ptr + b[:, None] * OUT + o[None, :], mask=b_ok[:, None] & o_ok[None, :], other=0.0)
            w = tl.load(w_ptr + _column(o[:, None], N, pair, K, k[None, :]), mask=o_ok[:, None] & k_ok[None, :],
                        other=0.0)
            dz += mma(dy, w, acc_t, PRECISION)
        if DROPOUT:
            seed = tl.load(rng_ptr)
            offset = tl.load(rng_ptr + 1)
            dz = dz * dropout_scale_at(_column(b[:, None], N, pair, K, k[None, :]), seed, offset, keep_prob, inv)
        a = tl.load(a_ptr + b * I + pair // J, mask=b_ok, other=0.0)
        v = tl.load(v_ptr + b * J + pair % J, mask=b_ok, other=0.0)
        tl.store(s_part_ptr + (chunk * B + b) * pairs + pair, tl.sum(dz * t, axis=1), mask=b_ok)
        dt += (a * v)[:, None] * dz
    tl.store(dt_part_ptr + (group * B + b[:, None]) * K + k[None, :], dt, mask=mask)


def _padded(inputs, dtype):
    """A, V, T = [1; x] factors in `dtype` (contiguous); two inputs get V = ones [B, 1]."""
    pad = lambda x: with_ones(x).to(dtype).contiguous()  # noqa: E731
    A = pad(inputs[0])
    V = pad(inputs[1]) if len(inputs) == 3 else torch.ones(A.shape[0], 1, dtype=dtype, device=A.device)
    return A, V, pad(inputs[-1])


def _tile(n, cap):
    return max(16, min(cap, triton.next_power_of_2(max(n, 1))))


def _split(units, tiles, t):
    """(per part, parts): units spread over enough parts that tiles * parts fills the device
    (rounding the units per part down, so that the parts are never fewer than wanted)."""
    per = max(1, units // max(1, triton.cdiv(target_programs(t), tiles)))
    return per, triton.cdiv(units, per)


class _Problem:
    """The shapes, tiles and scalar arguments shared by the three kernels."""

    def __init__(self, inputs, weight, dropout):
        self.dtype = accumulation_dtype(weight.dtype)
        self.A, self.V, self.T = _padded(inputs, self.dtype)
        self.B, self.I, self.J, self.K = self.A.shape[0], self.A.shape[1], self.V.shape[1], self.T.shape[1]
        self.N, self.OUT = self.I * self.J * self.K, weight.shape[0]
        self.BLOCK_B, self.BLOCK_K, self.BLOCK_O = (
            _tile(self.B, _MAX_BLOCK_B), _tile(self.K, _MAX_BLOCK_K), _tile(self.OUT, _MAX_BLOCK_O))
        self.chunks = triton.cdiv(self.K, self.BLOCK_K)
        keep = 1.0 - float(dropout)
        self.scalars = (keep, 1.0 / keep, double_bits(1.0 / keep))
        self.constexprs = dict(DROPOUT=dropout > 0.0, F64=self.dtype == torch.float64,
                               PRECISION=dot_precision(weight.dtype), BLOCK_B=self.BLOCK_B, BLOCK_K=self.BLOCK_K,
                               BLOCK_O=self.BLOCK_O)

    def shape_args(self):
        return self.B, self.I, self.J, self.K, self.N, self.OUT


def _forward_warps(p):
    # 8 warps (4 spill on sm_80 with dropout); TF32 spills 8 B with 8 (on sm_90 without dropout,
    # on sm_80 with it): 4 without dropout, 16 with.
    if p.constexprs["PRECISION"] == "tf32":
        return 16 if p.constexprs["DROPOUT"] else 4
    return 8


def _grad_input_warps(p):
    # 8 warps (4 spill in fp32), 16 for TF32 (8 spill 8-24 B on sm_80).
    return 16 if p.constexprs["PRECISION"] == "tf32" else 8


def forward(inputs, weight, bias, dropout, rng):
    p = _Problem(inputs, weight, dropout)
    if p.B == 0 or p.OUT == 0:
        return torch.empty(p.B, p.OUT, device=weight.device, dtype=weight.dtype)
    weight = weight.contiguous()
    tiles = triton.cdiv(p.B, p.BLOCK_B) * triton.cdiv(p.OUT, p.BLOCK_O)
    per_split, splits = _split(p.I * p.J * p.chunks, tiles, weight)
    partial = torch.empty(splits, p.B, p.OUT, dtype=p.dtype, device=weight.device)
    launch(_forward_kernel, (tiles * splits,), p.A, p.V, p.T, weight, partial, rng, *p.shape_args(), per_split,
           *p.scalars, **p.constexprs, num_warps=_forward_warps(p))
    y = partial.sum(0)  # a fixed-order reduction: deterministic, unlike atomics
    if bias is not None:
        y = y + bias.to(p.dtype)
    return y.to(weight.dtype)


def backward(grad_y, inputs, weight, dropout, rng):
    p = _Problem(inputs, weight, dropout)
    weight = weight.contiguous()
    dy = grad_y.to(weight.dtype).contiguous()
    grad_bias = grad_y.sum(0).to(weight.dtype)
    if p.B == 0 or p.OUT == 0:
        grads = [torch.zeros_like(x) for x in inputs]
        return grads, torch.zeros_like(weight), grad_bias
    grad_weight = torch.empty_like(weight)
    launch(_grad_weight_kernel, (triton.cdiv(p.OUT, p.BLOCK_O) * p.I * p.J * p.chunks,), p.A, p.V, p.T, dy,
           grad_weight, rng, *p.shape_args(), *p.scalars, **p.constexprs)
    b_tiles = triton.cdiv(p.B, p.BLOCK_B)
    per_group, groups = _split(p.I * p.J, b_tiles * p.chunks, weight)
    dt_part = torch.empty(groups, p.B, p.K, dtype=p.dtype, device=weight.device)
    s_part = torch.empty(p.chunks, p.B, p.I * p.J, dtype=p.dtype, device=weight.device)
    launch(_grad_input_kernel, (b_tiles * p.chunks * groups,), p.A, p.V, p.T, weight, dy, dt_part, s_part, rng,
           *p.shape_args(), per_group, *p.scalars, **p.constexprs, num_warps=_grad_input_warps(p))
    S = s_part.sum(0).view(p.B, p.I, p.J)  # S[b, i, j] = sum_k dZ[b, ijk] t_k
    dA = torch.einsum("bij,bj->bi", S, p.V)
    dV = torch.einsum("bij,bi->bj", S, p.A)
    dT = dt_part.sum(0)
    unpad = lambda g, x: g[:, 1:].to(x.dtype).contiguous()  # noqa: E731
    factors = [dA, dV, dT] if len(inputs) == 3 else [dA, dT]
    return [unpad(g, x) for g, x in zip(factors, inputs)], grad_weight, grad_bias
