"""Triton kernels of the fused low-rank fusion (LMF) and their host wrappers.

With X_m = [1; x_m] (host-padded, fp32; fp64 for fp64) and factors F_m [R, D_m + 1, out]:
  forward   grid (B/BLOCK_B, out/BLOCK_O): y = bias + sum_r w_r prod_m (X_m @ F_m[r])
  backward  same grid: recompute P_m = X_m @ F_m[r], G_m = dy w_r prod_{m' != m} P_m', then
            atomically add dX_m += G_m F_m[r]^T, dF_m[r] += X_m^T G_m and dw[r] += sum dy prod_m P_m
            (distinct addresses within a program; programs meet only through the atomics).
Up to three modalities; unused pointer arguments are never read (M is a compile-time constant).
The projections' operands are the factors' dtype (bf16/fp16 on tensor cores, fp64 in fp64) with
fp32 (fp64) accumulation; fp32 products are IEEE unless torch.backends.cuda.matmul.allow_tf32.
The backward's float atomics make it nondeterministic: it raises torch's non-determinism alert
under torch.use_deterministic_algorithms(True).
"""
import torch
import triton
import triton.language as tl

from mibcore.constants import accumulation_dtype
from mibcore.kernels._launch import alert_not_deterministic, dot_precision, launch
from mibcore.kernels._math import mma
from mibcore.reference import with_ones


@triton.jit
def _project(x_ptr, f_ptr, D, r, b, o, b_ok, o_ok, OUT, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr,
             BLOCK_D: tl.constexpr, BLOCK_O: tl.constexpr):
    """P[b, o] = sum_i X[b, i] F[r, i, o] for the program's [BLOCK_B, BLOCK_O] tile (X's dtype)."""
    acc_t = x_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_B, BLOCK_O], dtype=acc_t)
    for i0 in range(0, D, BLOCK_D):
        i = i0 + tl.arange(0, BLOCK_D)
        i_ok = i < D
        x = tl.load(x_ptr + b[:, None] * D + i[None, :], mask=b_ok[:, None] & i_ok[None, :], other=0.0)
        f = tl.load(f_ptr + (r * D + i[:, None]).to(tl.int64) * OUT + o[None, :], mask=i_ok[:, None] & o_ok[None, :],
                    other=0.0)
        acc += mma(x.to(f.dtype), f, acc_t, PRECISION)
    return acc


@triton.jit
def _scatter_grads(x_ptr, f_ptr, dx_ptr, df_ptr, g, D, r, b, o, b_ok, o_ok, OUT, PRECISION: tl.constexpr,
                   BLOCK_D: tl.constexpr):
    """dX[b, i] += sum_o G[b, o] F[r, i, o];  dF[r, i, o] += sum_b X[b, i] G[b, o]."""
    for i0 in range(0, D, BLOCK_D):
        i = i0 + tl.arange(0, BLOCK_D)
        i_ok = i < D
        x = tl.load(x_ptr + b[:, None] * D + i[None, :], mask=b_ok[:, None] & i_ok[None, :], other=0.0)
        f_index = (r * D + i[:, None]).to(tl.int64) * OUT + o[None, :]
        f = tl.load(f_ptr + f_index, mask=i_ok[:, None] & o_ok[None, :], other=0.0)
        # g stays in the accumulation dtype (it is a product of projections, not an operand).
        dx = mma(g, tl.trans(f.to(g.dtype)), g.dtype, PRECISION)
        tl.atomic_add(dx_ptr + b[:, None] * D + i[None, :], dx, mask=b_ok[:, None] & i_ok[None, :], sem="relaxed")
        df = mma(tl.trans(x), g, g.dtype, PRECISION)
        tl.atomic_add(df_ptr + f_index, df, mask=i_ok[:, None] & o_ok[None, :], sem="relaxed")


@triton.jit
def _forward_kernel(x0, x1, x2, f0, f1, f2, D0, D1, D2, w_ptr, bias_ptr, y_ptr, B, R, OUT, M: tl.constexpr,
                    PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_O: tl.constexpr):
    b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    o = tl.program_id(1).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    b_ok, o_ok = b < B, o < OUT
    acc_t = x0.dtype.element_ty
    acc = tl.zeros([BLOCK_B, BLOCK_O], dtype=acc_t)
    for r in range(0, R):
        prod = _project(x0, f0, D0, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_B, BLOCK_D, BLOCK_O)
        prod *= _project(x1, f1, D1, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_B, BLOCK_D, BLOCK_O)
        if M == 3:
            prod *= _project(x2, f2, D2, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_B, BLOCK_D, BLOCK_O)
        acc += tl.load(w_ptr + r).to(acc_t) * prod
    acc += tl.load(bias_ptr + o, mask=o_ok, other=0.0).to(acc_t)[None, :]
    tl.store(y_ptr + b[:, None] * OUT + o[None, :], acc.to(y_ptr.dtype.element_ty), mask=b_ok[:, None] & o_ok[None, :])


@triton.jit
def _backward_kernel(x0, x1, x2, f0, f1, f2, D0, D1, D2, dx0, dx1, dx2, df0, df1, df2, w_ptr, dw_ptr, dy_ptr,
                     B, R, OUT, M: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_O: tl.constexpr):
    b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    o = tl.program_id(1).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    b_ok, o_ok = b < B, o < OUT
    acc_t = x0.dtype.element_ty
    dy = tl.load(dy_ptr + b[:, None] * OUT + o[None, :], mask=b_ok[:, None] & o_ok[None, :], other=0.0).to(acc_t)
    for r in range(0, R):
        p0 = _project(x0, f0, D0, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_B, BLOCK_D, BLOCK_O)
        p1 = _project(x1, f1, D1, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_B, BLOCK_D, BLOCK_O)
        if M == 3:
            p2 = _project(x2, f2, D2, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_B, BLOCK_D, BLOCK_O)
        else:
            p2 = tl.full([BLOCK_B, BLOCK_O], 1.0, acc_t)
        tl.atomic_add(dw_ptr + r, tl.sum(tl.sum(dy * p0 * p1 * p2, axis=1), axis=0), sem="relaxed")
        g = dy * tl.load(w_ptr + r).to(acc_t)
        _scatter_grads(x0, f0, dx0, df0, g * p1 * p2, D0, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_D)
        _scatter_grads(x1, f1, dx1, df1, g * p0 * p2, D1, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_D)
        if M == 3:
            _scatter_grads(x2, f2, dx2, df2, g * p0 * p1, D2, r, b, o, b_ok, o_ok, OUT, PRECISION, BLOCK_D)


def _prepare(inputs, factors):
    dtype = accumulation_dtype(factors[0].dtype)
    xs = [with_ones(x).to(dtype).contiguous() for x in inputs]
    fs = [f.contiguous() for f in factors]
    while len(xs) < 3:  # unused slots (M is a compile-time constant): any valid pointer
        xs.append(xs[0])
        fs.append(fs[0])
    return xs, fs


def _launch_shape(B, OUT, dtype):
    BLOCK_B, BLOCK_D, BLOCK_O = 16, 16, max(16, min(32, triton.next_power_of_2(OUT)))  # larger spills
    grid = (triton.cdiv(B, BLOCK_B), triton.cdiv(OUT, BLOCK_O))
    # fp32: num_stages=1, no software pipelining of the D loop, whose prefetched tiles kept the IEEE
    # kernels spilling 16-48 bytes on sm_90 (the AOT sweep); the tiles are small and few. (8 warps
    # spill 8 B at d 50 under triton 3.8; fp64 with one stage spills 8 B on sm_80.)
    stages = dict(num_stages=1) if dtype == torch.float32 else {}
    return grid, dict(PRECISION=dot_precision(dtype), BLOCK_B=BLOCK_B, BLOCK_D=BLOCK_D, BLOCK_O=BLOCK_O, **stages)


def forward(inputs, factors, rank_weights, bias):
    xs, fs = _prepare(inputs, factors)
    B, R, OUT = inputs[0].shape[0], factors[0].shape[0], factors[0].shape[2]
    y = torch.empty(B, OUT, dtype=factors[0].dtype, device=factors[0].device)
    if B == 0:
        return y
    grid, blocks = _launch_shape(B, OUT, factors[0].dtype)
    launch(_forward_kernel, grid, *xs, *fs, *(x.shape[1] for x in xs), rank_weights.reshape(-1).contiguous(),
           bias.reshape(-1).contiguous(), y, B, R, OUT, M=len(inputs), **blocks)
    return y


def backward(grad_y, inputs, factors, rank_weights):
    xs, fs = _prepare(inputs, factors)
    B, R, OUT = inputs[0].shape[0], factors[0].shape[0], factors[0].shape[2]
    dtype = xs[0].dtype
    dxs = [torch.zeros_like(x) for x in xs]
    dfs = [torch.zeros(f.shape, dtype=dtype, device=f.device) for f in fs]
    dw = torch.zeros(R, dtype=dtype, device=grad_y.device)
    if B > 0:
        alert_not_deterministic("low_rank_fusion backward on the triton backend (float atomics)")
        grid, blocks = _launch_shape(B, OUT, factors[0].dtype)
        launch(_backward_kernel, grid, *xs, *fs, *(x.shape[1] for x in xs), *dxs, *dfs,
               rank_weights.reshape(-1).contiguous(), dw, grad_y.contiguous(), B, R, OUT, M=len(inputs), **blocks)
    n = len(inputs)
    grad_inputs = [dx[:, 1:].to(x.dtype).contiguous() for dx, x in zip(dxs[:n], inputs)]
    grad_factors = [df.to(f.dtype) for df, f in zip(dfs[:n], factors)]
    return grad_inputs, grad_factors, dw.to(rank_weights.dtype), grad_y.sum(0).to(rank_weights.dtype)
