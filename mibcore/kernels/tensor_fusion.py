"""Triton kernels of the fused tensor fusion (TFN + Linear) and their host wrappers.

The [B, N] outer product of A = [1; x1], V = [1; x2], T = [1; x3] (two inputs: V = [1]) is
never stored. Its columns are c = i R + r, r = j K + k (R = J K): column c of row b is
A[b, i] VT[b, r], VT[b, r] = V[b, j] T[b, k]. A tile is a per-row scalar A[b, i] times a chunk of
BLOCK_R columns of VT (at most _MAX_BLOCK_R: the flattened (j, k) pads only its last chunk, where
tiles over k alone padded 51 to 64 in every pair); a program loops over a group of i with its VT
tile held in registers. The constant 1 of each factor is made inside the kernels (_factor), and
every operand is read with its strides: no padded copy, no torch op around the kernels. Every
grid is one-dimensional (axis 0 admits 2^31 - 1 programs) and sized to fill the device (two
programs per SM, _groups); nothing is reduced with atomics, so every kernel here is deterministic:
  keep bits programs (word range): bit l of word w is the keep decision of flat element
            32 w + l of the [B, N] product, from Philox blocks 8 w .. 8 w + 7 (one Philox per 4
            elements, once per pass; the GEMM kernels read the bits instead of rerunning Philox
            for every output tile). A transient B N / 8 bytes, made again by the backward.
  forward   programs (b tile, out tile, r chunk, i group): the group's columns summed into
            partial[split] (fp32, fp64 for fp64); a second kernel sums the partials in a fixed
            order and adds the bias.
  grad W    programs (out tile, r chunk, i group): dW[:, i R + chunk] = dY^T @ (A_i VT * mask)
            over all of B for each i of the group (dY and VT held across i where B is one tile);
            the programs of the first chunk and group also write grad bias = sum_b dY.
  grad x    programs (b tile, r chunk, i group): dZ = dY @ W[:, unit] * mask for each i of the
            group; dA partial[chunk, b, i] = sum_r dZ VT, dVT partial[group] = sum_i A_i dZ; a
            last kernel sums the partials and contracts dVT with T and V into dV and dT.
Index arithmetic is int32 unless some offset may reach 2^31 (WIDE, chosen by the host: int64).
Operands of tl.dot are the weight's dtype (bf16/fp16 on tensor cores, fp64 in fp64), the
accumulator fp32 (fp64 for fp64); fp32 products are IEEE fp32 unless
torch.backends.cuda.matmul.allow_tf32 is set (then TF32). The keep decisions are those of
mibcore/kernels/_math.py (the Philox contract of csrc/include/philox.h).
"""
import math

import numpy
import torch
import triton
import triton.language as tl

from mibcore.constants import accumulation_dtype
from mibcore.kernels._launch import dot_precision, double_bits, launch, target_programs
from mibcore.kernels._math import exact_scalar, mma, philox_block

# Tiles of at most 32 rows of B and 64 columns and outputs (the paper's 50 outputs: one tile);
# larger ones spill registers.
_MAX_BLOCK_B = 32
_MAX_BLOCK_R = 64
_MAX_BLOCK_O = 64
_BITS_WORDS = 64  # words of keep bits per program (2048 elements)
_SUM_BLOCK = 256  # outputs per program of the forward's sum of partials
# Offsets in int32 below this; at or above it the kernels compute them in int64 (WIDE).
_INT32_LIMIT = 2**31


@triton.jit
def _idx(x, WIDE: tl.constexpr):
    """x as int64 where offsets may reach 2^31 (WIDE), else unchanged (int32)."""
    if WIDE:
        return x.to(tl.int64)
    else:
        return x


@triton.jit
def _factor(x_ptr, s0, s1, b, i, ok):
    """[1; x][b, i] (the padding, made here): 1 at i = 0, x[b, i - 1] after, 0 where not ok."""
    x = tl.load(x_ptr + b * s0 + (i - 1) * s1, mask=ok & (i > 0), other=0.0)
    return tl.where(i == 0, tl.where(ok, 1.0, 0.0), x)


@triton.jit
def _keep_scale(bits_ptr, e, ok, inv_keep):
    """inv_keep where flat element e is kept (its bit of the keep bits), else 0."""
    word = tl.load(bits_ptr + (e >> 5), mask=ok, other=0)
    return tl.where(((word >> (e & 31)) & 1) != 0, inv_keep, 0.0)


@triton.jit
def _or(a, b):
    return a | b


def keep_threshold(keep_prob):
    """The integer form of the contract's keep test: uniform_from_bits(r) = ((r >> 8) + 1) 2^-24 <=
    keep_prob (float32) iff (r >> 8) < floor(keep_prob 2^24) (exact: both sides are integers
    times 2^-24), which spares a conversion per element."""
    return math.floor(float(numpy.float32(keep_prob)) * 2**24)


@triton.jit
def _keep_bits_kernel(bits_ptr, rng_ptr, words, threshold, BLOCK: tl.constexpr):
    # Bit 4 q + l of word w is word l of Philox block 8 w + q: flat element 32 w + 4 q + l, kept
    # iff its 24-bit uniform <= keep_prob (keep_threshold).
    w = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    q = tl.arange(0, 8)
    r0, r1, r2, r3 = philox_block(w[:, None] * 8 + q[None, :], tl.load(rng_ptr), tl.load(rng_ptr + 1))
    s = 4 * q[None, :]
    bits = (((r0 >> 8) < threshold).to(tl.int32) << s) | (((r1 >> 8) < threshold).to(tl.int32) << (s + 1)) | \
        (((r2 >> 8) < threshold).to(tl.int32) << (s + 2)) | (((r3 >> 8) < threshold).to(tl.int32) << (s + 3))
    tl.store(bits_ptr + w, tl.reduce(bits, 1, _or), mask=w < words)


@triton.jit
def _vt_tile(v_ptr, sv0, sv1, t_ptr, st0, st1, b, r, K, ok):
    """The [BLOCK_B, BLOCK_R] tile of VT[b, r] = V[b, r // K] T[b, r % K] (the product of the
    last two factors; with two inputs V = [1], r // K = 0)."""
    j = r // K
    return _factor(v_ptr, sv0, sv1, b[:, None], j[None, :], ok) * _factor(t_ptr, st0, st1, b[:, None],
                                                                            (r - j * K)[None, :], ok)


@triton.jit(do_not_specialize=["inv_keep_bits"])
def _forward_kernel(a_ptr, sa0, sa1, v_ptr, sv0, sv1, t_ptr, st0, st1, w_ptr, sw0, sw1, bits_ptr, part_ptr,
                    B, I, K, R, N, OUT, per_group, groups, inv_keep, inv_keep_bits,
                    DROPOUT: tl.constexpr, F64: tl.constexpr, WIDE: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr):
    acc_t = part_ptr.dtype.element_ty
    inv = exact_scalar(inv_keep, inv_keep_bits, F64)
    pid = tl.program_id(0)
    n_b = tl.cdiv(B, BLOCK_B)
    n_o = tl.cdiv(OUT, BLOCK_O)
    # b tiles fastest: the programs that read one weight tile run side by side (L2 hits).
    split = pid // (n_b * n_o)
    chunk = split // groups
    b = _idx((pid % n_b) * BLOCK_B + tl.arange(0, BLOCK_B), WIDE)
    o = _idx((pid // n_b % n_o) * BLOCK_O + tl.arange(0, BLOCK_O), WIDE)
    r = chunk * BLOCK_R + tl.arange(0, BLOCK_R)
    b_ok, o_ok, r_ok = b < B, o < OUT, r < R
    br_ok = b_ok[:, None] & r_ok[None, :]
    vt = _vt_tile(v_ptr, sv0, sv1, t_ptr, st0, st1, b, r, K, br_ok).to(acc_t)  # the loop's invariant
    i0 = (split % groups) * per_group
    acc = tl.zeros([BLOCK_B, BLOCK_O], dtype=acc_t)
    for i in range(i0, tl.minimum(i0 + per_group, I)):
        col = _idx(i, WIDE) * R + r
        z = _factor(a_ptr, sa0, sa1, b, i, b_ok).to(acc_t)[:, None] * vt
        if DROPOUT:
            z = z * _keep_scale(bits_ptr, b[:, None] * N + col[None, :], br_ok, inv)
        w = tl.load(w_ptr + o[None, :] * sw0 + col[:, None] * sw1, mask=r_ok[:, None] & o_ok[None, :], other=0.0)
        acc += mma(z.to(w.dtype), w, acc_t, PRECISION)
    tl.store(part_ptr + (split * B + b[:, None]) * OUT + o[None, :], acc, mask=b_ok[:, None] & o_ok[None, :])


@triton.jit(do_not_specialize=["splits"])
def _sum_partials_kernel(part_ptr, bias_ptr, s_bias, y_ptr, size, OUT, splits, HAS_BIAS: tl.constexpr,
                         WIDE: tl.constexpr, BLOCK: tl.constexpr):
    # y = sum of the partials in split order (deterministic, unlike atomics) + bias, in y's dtype.
    i = _idx(tl.program_id(0) * BLOCK + tl.arange(0, BLOCK), WIDE)
    ok = i < size
    acc = tl.zeros([BLOCK], dtype=part_ptr.dtype.element_ty)
    for s in range(splits):
        acc += tl.load(part_ptr + _idx(s, WIDE) * size + i, mask=ok, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + (i % OUT) * s_bias, mask=ok, other=0.0).to(acc.dtype)
    tl.store(y_ptr + i, acc.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["inv_keep_bits"])
def _grad_weight_kernel(a_ptr, sa0, sa1, v_ptr, sv0, sv1, t_ptr, st0, st1, dy_ptr, sd0, sd1, bits_ptr, dw_ptr,
                        db_ptr, B, I, K, R, N, OUT, per_group, groups, inv_keep, inv_keep_bits,
                        DROPOUT: tl.constexpr, F64: tl.constexpr, WIDE: tl.constexpr, PRECISION: tl.constexpr,
                        ONE_B: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr):
    acc_t: tl.constexpr = tl.float64 if F64 else tl.float32
    inv = exact_scalar(inv_keep, inv_keep_bits, F64)
    pid = tl.program_id(0)
    n_o = tl.cdiv(OUT, BLOCK_O)
    split = pid // n_o
    o = _idx((pid % n_o) * BLOCK_O + tl.arange(0, BLOCK_O), WIDE)
    r = (split // groups) * BLOCK_R + tl.arange(0, BLOCK_R)
    o_ok, r_ok = o < OUT, r < R
    # grad bias = sum_b dY, written by the programs of the first split
    dy_sum = tl.zeros([BLOCK_B, BLOCK_O], dtype=acc_t)
    for b0 in range(0, B, BLOCK_B):
        b = _idx(b0 + tl.arange(0, BLOCK_B), WIDE)
        dy_sum += tl.load(dy_ptr + b[:, None] * sd0 + o[None, :] * sd1, mask=(b < B)[:, None] & o_ok[None, :],
                          other=0.0).to(dw_ptr.dtype.element_ty).to(acc_t)
    tl.store(db_ptr + o, tl.sum(dy_sum, axis=0).to(db_ptr.dtype.element_ty), mask=o_ok & (split == 0))
    if ONE_B:  # all of B in one tile: dY and VT are the same for every i of the group
        b1 = _idx(tl.arange(0, BLOCK_B), WIDE)
        b1_ok = b1 < B
        vt1 = _vt_tile(v_ptr, sv0, sv1, t_ptr, st0, st1, b1, r, K, b1_ok[:, None] & r_ok[None, :]).to(acc_t)
        dy1 = tl.load(dy_ptr + b1[:, None] * sd0 + o[None, :] * sd1, mask=b1_ok[:, None] & o_ok[None, :],
                      other=0.0).to(dw_ptr.dtype.element_ty)
    i0 = (split % groups) * per_group
    for i in range(i0, tl.minimum(i0 + per_group, I)):
        col = _idx(i, WIDE) * R + r
        acc = tl.zeros([BLOCK_O, BLOCK_R], dtype=acc_t)
        for b0 in range(0, B, BLOCK_B):
            b = _idx(b0 + tl.arange(0, BLOCK_B), WIDE)
            b_ok = b < B
            br_ok = b_ok[:, None] & r_ok[None, :]
            if ONE_B:
                vt = vt1
                dy = dy1
            else:
                vt = _vt_tile(v_ptr, sv0, sv1, t_ptr, st0, st1, b, r, K, br_ok).to(acc_t)
                dy = tl.load(dy_ptr + b[:, None] * sd0 + o[None, :] * sd1, mask=b_ok[:, None] & o_ok[None, :],
                             other=0.0).to(dw_ptr.dtype.element_ty)
            z = _factor(a_ptr, sa0, sa1, b, i, b_ok).to(acc_t)[:, None] * vt
            if DROPOUT:
                z = z * _keep_scale(bits_ptr, b[:, None] * N + col[None, :], br_ok, inv)
            acc += mma(tl.trans(dy), z.to(dy.dtype), acc_t, PRECISION)
        tl.store(dw_ptr + o[:, None] * N + col[None, :], acc.to(dw_ptr.dtype.element_ty),
                 mask=o_ok[:, None] & r_ok[None, :])


@triton.jit(do_not_specialize=["inv_keep_bits"])
def _grad_input_kernel(a_ptr, sa0, sa1, v_ptr, sv0, sv1, t_ptr, st0, st1, w_ptr, sw0, sw1, dy_ptr, sd0, sd1,
                       bits_ptr, dvt_part_ptr, da_part_ptr, B, I, K, R, N, OUT, per_group, inv_keep,
                       inv_keep_bits, DROPOUT: tl.constexpr, F64: tl.constexpr, WIDE: tl.constexpr,
                       PRECISION: tl.constexpr, ONE_O: tl.constexpr, BLOCK_B: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr):
    acc_t = dvt_part_ptr.dtype.element_ty
    inv = exact_scalar(inv_keep, inv_keep_bits, F64)
    pid = tl.program_id(0)
    n_b = tl.cdiv(B, BLOCK_B)
    chunks = tl.cdiv(R, BLOCK_R)
    chunk = pid // n_b % chunks
    group = pid // (n_b * chunks)
    b = _idx((pid % n_b) * BLOCK_B + tl.arange(0, BLOCK_B), WIDE)
    r = chunk * BLOCK_R + tl.arange(0, BLOCK_R)
    b_ok, r_ok = b < B, r < R
    br_ok = b_ok[:, None] & r_ok[None, :]
    vt = _vt_tile(v_ptr, sv0, sv1, t_ptr, st0, st1, b, r, K, br_ok).to(acc_t)
    if ONE_O:  # all outputs in one tile: dY is the same for every i of the group
        o1 = _idx(tl.arange(0, BLOCK_O), WIDE)
        o1_ok = o1 < OUT
        dy1 = tl.load(dy_ptr + b[:, None] * sd0 + o1[None, :] * sd1, mask=b_ok[:, None] & o1_ok[None, :],
                      other=0.0).to(w_ptr.dtype.element_ty)
    i0 = group * per_group
    dvt = tl.zeros([BLOCK_B, BLOCK_R], dtype=acc_t)
    for i in range(i0, tl.minimum(i0 + per_group, I)):
        col = _idx(i, WIDE) * R + r
        if ONE_O:
            w = tl.load(w_ptr + o1[:, None] * sw0 + col[None, :] * sw1, mask=o1_ok[:, None] & r_ok[None, :],
                        other=0.0)
            dz = mma(dy1, w, acc_t, PRECISION)
        else:
            dz = tl.zeros([BLOCK_B, BLOCK_R], dtype=acc_t)
            for o0 in range(0, OUT, BLOCK_O):
                o = _idx(o0 + tl.arange(0, BLOCK_O), WIDE)
                o_ok = o < OUT
                dy = tl.load(dy_ptr + b[:, None] * sd0 + o[None, :] * sd1, mask=b_ok[:, None] & o_ok[None, :],
                             other=0.0)
                w = tl.load(w_ptr + o[:, None] * sw0 + col[None, :] * sw1, mask=o_ok[:, None] & r_ok[None, :],
                            other=0.0)
                dz += mma(dy.to(w.dtype), w, acc_t, PRECISION)
        if DROPOUT:
            dz = dz * _keep_scale(bits_ptr, b[:, None] * N + col[None, :], br_ok, inv)
        # dA[b, i] over this chunk of r, and d VT accumulated over the group's i
        tl.store(da_part_ptr + (chunk * B + b) * I + i, tl.sum(dz * vt, axis=1), mask=b_ok)
        dvt += _factor(a_ptr, sa0, sa1, b, i, b_ok).to(acc_t)[:, None] * dz
    tl.store(dvt_part_ptr + (group * B + b[:, None]) * R + r[None, :], dvt, mask=br_ok)


@triton.jit(do_not_specialize=["chunks", "groups"])
def _grad_factors_kernel(v_ptr, sv0, sv1, t_ptr, st0, st1, dvt_part_ptr, da_part_ptr, da_ptr, dv_ptr, dt_ptr,
                         B, I, J, K, R, chunks, groups, THREE: tl.constexpr, WIDE: tl.constexpr,
                         BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    # One program per row b: the partials summed in a fixed order, dVT contracted with T and V
    # into dV and dT, the constant columns dropped (index 0 of each factor has no input), each
    # gradient written in its input's dtype.
    acc_t = dvt_part_ptr.dtype.element_ty
    b = _idx(tl.program_id(0), WIDE)
    for i0 in range(1, I, BLOCK_I):  # dA = sum over r chunks of its partials
        i = i0 + tl.arange(0, BLOCK_I)
        ok = i < I
        acc = tl.zeros([BLOCK_I], dtype=acc_t)
        for c in range(chunks):
            acc += tl.load(da_part_ptr + (_idx(c, WIDE) * B + b) * I + i, mask=ok, other=0.0)
        tl.store(da_ptr + b * (I - 1) + i - 1, acc.to(da_ptr.dtype.element_ty), mask=ok)
    for k0 in range(1, K, BLOCK_K):  # dT[k] = sum_j dVT[j, k] V[j]
        k = k0 + tl.arange(0, BLOCK_K)
        acc = tl.zeros([BLOCK_K], dtype=acc_t)
        for j0 in range(0, J, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            dvt = _summed_dvt(dvt_part_ptr, b, j, k, B, J, K, R, groups, WIDE, acc_t, BLOCK_J, BLOCK_K)
            acc += tl.sum(dvt * _factor(v_ptr, sv0, sv1, b, j, j < J).to(acc_t)[:, None], axis=0)
        tl.store(dt_ptr + b * (K - 1) + k - 1, acc.to(dt_ptr.dtype.element_ty), mask=k < K)
    if THREE:
        for j0 in range(1, J, BLOCK_J):  # dV[j] = sum_k dVT[j, k] T[k]
            j = j0 + tl.arange(0, BLOCK_J)
            acc = tl.zeros([BLOCK_J], dtype=acc_t)
            for k0 in range(0, K, BLOCK_K):
                k = k0 + tl.arange(0, BLOCK_K)
                dvt = _summed_dvt(dvt_part_ptr, b, j, k, B, J, K, R, groups, WIDE, acc_t, BLOCK_J, BLOCK_K)
                acc += tl.sum(dvt * _factor(t_ptr, st0, st1, b, k, k < K).to(acc_t)[None, :], axis=1)
            tl.store(dv_ptr + b * (J - 1) + j - 1, acc.to(dv_ptr.dtype.element_ty), mask=j < J)


@triton.jit
def _summed_dvt(dvt_part_ptr, b, j, k, B, J, K, R, groups, WIDE: tl.constexpr, acc_t: tl.constexpr,
                BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    """dVT[b, j K + k] = the sum over groups of its partials, for a tile of j and k."""
    ok = (j < J)[:, None] & (k < K)[None, :]
    s = tl.zeros([BLOCK_J, BLOCK_K], dtype=acc_t)
    for g in range(groups):
        s += tl.load(dvt_part_ptr + (_idx(g, WIDE) * B + b) * R + j[:, None] * K + k[None, :], mask=ok, other=0.0)
    return s


def _tile(n, cap):
    return max(16, min(cap, triton.next_power_of_2(max(n, 1))))


def _groups(n, tiles, t):
    """(per group, groups): the n values of a loop split into groups, tiles * groups programs,
    choosing the group size that finishes first: the fewest waves of target_programs (two per
    SM) times the values per program, plus one for each program's own work."""
    slots = target_programs(t)
    sizes = {triton.cdiv(n, g) for g in range(1, min(n, 16 * slots) + 1)}
    per = min(sizes, key=lambda p: (triton.cdiv(tiles * triton.cdiv(n, p), slots) * (p + 1), -p))
    return per, triton.cdiv(n, per)


def _extent(t):
    """1 + the largest element offset of `t` (0 if empty)."""
    return 0 if t.numel() == 0 else 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))


# Units (i, r chunk) are int32 in the kernels, and a grid axis holds 2^31 - 1 programs.
_MAX_UNITS = 2**31 - 1


class _Problem:
    """The shapes, tiles and scalar arguments shared by the kernels."""

    def __init__(self, inputs, weight, dropout):
        self.dtype = accumulation_dtype(weight.dtype)
        self.weight_bits = 8 * weight.element_size()
        self.B = inputs[0].shape[0]
        self.I, self.K = inputs[0].shape[1] + 1, inputs[-1].shape[1] + 1
        self.J = inputs[1].shape[1] + 1 if len(inputs) == 3 else 1
        self.R = self.J * self.K  # columns per value of i: the flattened (j, k)
        self.N, self.OUT = self.I * self.R, weight.shape[0]
        self.BLOCK_B, self.BLOCK_R, self.BLOCK_O = (
            _tile(self.B, _MAX_BLOCK_B), _tile(self.R, _MAX_BLOCK_R), _tile(self.OUT, _MAX_BLOCK_O))
        self.chunks = triton.cdiv(self.R, self.BLOCK_R)
        if self.I * self.chunks > _MAX_UNITS:  # (checked before any allocation or launch)
            raise ValueError(
                f"mibcore::tensor_fusion_triton: `inputs` of sizes {[x.shape[1] for x in inputs]} make "
                f"{self.I * self.chunks} units of work, more than the Triton kernels count (2^31 - 1): "
                "use the cpu or cuda backend")
        # The factors' pointers and strides (two inputs: V's pointer is unused, J = 1 reads no x2).
        x2 = inputs[1] if len(inputs) == 3 else inputs[0]
        self.factors = (inputs[0], *inputs[0].stride(), x2, *x2.stride(), inputs[-1], *inputs[-1].stride())
        self.three = len(inputs) == 3
        self.dropout = dropout > 0.0
        keep = 1.0 - float(dropout)
        self.keep_prob = keep
        self.inv_keep = (1.0 / keep, double_bits(1.0 / keep))
        self.extents = [_extent(t) for t in (*inputs, weight)] + [max(self.B, self.OUT, 1) * self.N]
        self.constexprs = dict(DROPOUT=self.dropout, F64=self.dtype == torch.float64,
                               PRECISION=dot_precision(weight.dtype), BLOCK_B=self.BLOCK_B, BLOCK_R=self.BLOCK_R,
                               BLOCK_O=self.BLOCK_O)

    def wide(self, *sizes):
        """Whether some offset (of the operands or of the `sizes` more) may reach 2^31: int64 indices."""
        return max(self.extents + list(sizes)) >= _INT32_LIMIT

    def keep_bits(self, rng, device):
        """The keep bits of this call's [B, N] product (None without dropout): one launch."""
        if not self.dropout:
            return None
        words = triton.cdiv(self.B * self.N, 32)
        bits = torch.empty(words, dtype=torch.int32, device=device)
        launch(_keep_bits_kernel, (triton.cdiv(words, _BITS_WORDS),), bits, rng, words,
               keep_threshold(self.keep_prob), BLOCK=_BITS_WORDS)
        return bits


# The GEMM kernels' launch options, chosen where none of the launch table's calls spills on sm_80
# and sm_90 (`make aot-sweep`; compiled, not yet run): 8 warps (at 4 the 64 x 64 fp32 tiles spill);
# one stage for the FMA dots of the forward and grad W (two spill); grad W on tensor cores two
# stages for TF32, three for bf16/fp16 (fewer spill); grad x two stages where the outputs are one
# tile (one spills without dropout), else three (one or two spill).
_FORWARD_OPTIONS = dict(num_warps=8, num_stages=1)


def _grad_weight_options(p):
    stages = 3 if p.weight_bits == 16 else 2 if p.constexprs["PRECISION"] == "tf32" else 1
    return dict(num_warps=8, num_stages=stages)


def _grad_input_options(one_o):
    return dict(num_warps=8, num_stages=2 if one_o else 3)


_FACTORS_BLOCKS = dict(BLOCK_I=64, BLOCK_J=32, BLOCK_K=64)
_FACTORS_OPTIONS = dict(num_warps=8)  # (4, the default, spills 8 B at int64 offsets under triton 3.6)


def forward(inputs, weight, bias, dropout, rng):
    p = _Problem(inputs, weight, dropout)
    if p.B == 0 or p.OUT == 0:
        return torch.empty(p.B, p.OUT, device=weight.device, dtype=weight.dtype)
    tiles = triton.cdiv(p.B, p.BLOCK_B) * triton.cdiv(p.OUT, p.BLOCK_O)
    per_group, groups = _groups(p.I, tiles * p.chunks, weight)
    splits = p.chunks * groups
    wide = p.wide(splits * p.B * p.OUT)
    bits = p.keep_bits(rng, weight.device)
    partial = torch.empty(splits, p.B, p.OUT, dtype=p.dtype, device=weight.device)
    launch(_forward_kernel, (tiles * splits,), *p.factors, weight, *weight.stride(), bits if p.dropout else rng,
           partial, p.B, p.I, p.K, p.R, p.N, p.OUT, per_group, groups, *p.inv_keep, **p.constexprs,
           WIDE=wide, trips=(per_group,), **_FORWARD_OPTIONS)
    y = torch.empty(p.B, p.OUT, device=weight.device, dtype=weight.dtype)
    launch(_sum_partials_kernel, (triton.cdiv(p.B * p.OUT, _SUM_BLOCK),), partial,
           bias if bias is not None else partial, bias.stride(0) if bias is not None else 0, y, p.B * p.OUT, p.OUT,
           splits, HAS_BIAS=bias is not None, WIDE=wide, BLOCK=_SUM_BLOCK, trips=(splits,),
           moves=partial.numel() * partial.element_size() + y.numel() * y.element_size())
    return y


def backward(grad_y, inputs, weight, dropout, rng):
    p = _Problem(inputs, weight, dropout)
    if p.B == 0 or p.OUT == 0:
        grads = [torch.zeros_like(x) for x in inputs]
        return grads, torch.zeros_like(weight), grad_y.sum(0).to(weight.dtype)
    device = weight.device
    b_tiles = triton.cdiv(p.B, p.BLOCK_B)
    per_group, groups = _groups(p.I, b_tiles * p.chunks, weight)
    wide = p.wide(_extent(grad_y), groups * p.B * p.R)
    bits = p.keep_bits(rng, device)
    bits_arg = bits if p.dropout else rng  # (unread without dropout)
    grad_weight = torch.empty(weight.shape, dtype=weight.dtype, device=device)
    grad_bias = torch.empty(p.OUT, dtype=weight.dtype, device=device)
    o_tiles = triton.cdiv(p.OUT, p.BLOCK_O)
    w_per_group, w_groups = _groups(p.I, o_tiles * p.chunks, weight)
    launch(_grad_weight_kernel, (o_tiles * p.chunks * w_groups,), *p.factors, grad_y, *grad_y.stride(), bits_arg,
           grad_weight, grad_bias, p.B, p.I, p.K, p.R, p.N, p.OUT, w_per_group, w_groups, *p.inv_keep,
           **p.constexprs, WIDE=wide, ONE_B=b_tiles == 1, trips=(b_tiles, w_per_group, b_tiles),
           **_grad_weight_options(p))
    dvt_part = torch.empty(groups, p.B, p.R, dtype=p.dtype, device=device)
    da_part = torch.empty(p.chunks, p.B, p.I, dtype=p.dtype, device=device)
    launch(_grad_input_kernel, (b_tiles * p.chunks * groups,), *p.factors, weight, *weight.stride(), grad_y,
           *grad_y.stride(), bits_arg, dvt_part, da_part, p.B, p.I, p.K, p.R, p.N, p.OUT, per_group, *p.inv_keep,
           **p.constexprs, WIDE=wide, ONE_O=o_tiles == 1,
           trips=(per_group,) if o_tiles == 1 else (per_group, o_tiles), **_grad_input_options(o_tiles == 1))
    grads = [torch.empty(x.shape, dtype=x.dtype, device=device) for x in inputs]
    dv = grads[1] if p.three else grads[0]  # (unwritten with two inputs)
    f = _FACTORS_BLOCKS
    trips = (triton.cdiv(p.I - 1, f["BLOCK_I"]), p.chunks, triton.cdiv(p.K - 1, f["BLOCK_K"]),
             triton.cdiv(p.J, f["BLOCK_J"]), groups)
    if p.three:
        trips += (triton.cdiv(p.J - 1, f["BLOCK_J"]), triton.cdiv(p.K, f["BLOCK_K"]), groups)
    launch(_grad_factors_kernel, (p.B,), *p.factors[3:], dvt_part, da_part, grads[0], dv, grads[-1], p.B, p.I,
           p.J, p.K, p.R, p.chunks, groups, THREE=p.three, WIDE=wide, trips=trips,
           moves=sum(t.numel() * t.element_size() for t in (dvt_part, da_part, *grads)), **f, **_FACTORS_OPTIONS)
    return grads, grad_weight, grad_bias
