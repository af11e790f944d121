"""Triton kernels of the fused reparameterize + KL operator, and their host wrappers.

One program handles BLOCK_R rows and walks each row's Philox blocks (4 consecutive flat
elements each, the randomness contract) BLOCK_Q at a time: one Philox call and two Box-Muller
pairs give the 4 normals of a block, and the 4 lanes of the block are loaded and stored as
4 strided accesses (one cache line serves them). A block that straddles two rows is generated
by both (at most 2 extra blocks per row). The per-row KL sum stays in registers. eps is
regenerated from (seed, offset) by the backward; it is never stored. The math is
mibcore/kernels/_math.py (mirror of csrc/include).
"""
import math

import torch
import triton
import triton.language as tl

from mibcore.constants import accumulation_dtype
from mibcore.kernels._launch import double_bits, launch
from mibcore.kernels._math import exact_scalar, kl_element, kl_element_dscale, normal_block, std_terms

_MAX_BLOCK_Q = 512
_BLOCKS_PER_PROGRAM = 256  # Philox blocks (1024 elements) per program: 1024 spills in float64


@triton.jit
def _row_blocks(pid, rows, cols, BLOCK_R: tl.constexpr):
    row = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    start = row * cols
    return row, row < rows, start, start + cols


@triton.jit(do_not_specialize=["shift_bits"])
def _forward_kernel(mu_ptr, scale_ptr, z_ptr, kl_ptr, rng_ptr, rows, cols, row_blocks, shift, shift_bits,
                    P: tl.constexpr, SAMPLE: tl.constexpr, F64: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr):
    acc_t = tl.float64 if F64 else tl.float32
    shift_v = exact_scalar(shift, shift_bits, F64)
    row, row_ok, start, end = _row_blocks(tl.program_id(0), rows, cols, BLOCK_R)
    seed = tl.load(rng_ptr)
    offset = tl.load(rng_ptr + 1)
    kl = tl.zeros([BLOCK_R], dtype=acc_t)
    for q0 in range(0, row_blocks, BLOCK_Q):
        block = (start >> 2)[:, None] + q0 + tl.arange(0, BLOCK_Q).to(tl.int64)[None, :]
        if SAMPLE:
            normals = normal_block(block, seed, offset)
        for lane in tl.static_range(4):
            index = block * 4 + lane
            mask = row_ok[:, None] & (index >= start[:, None]) & (index < end[:, None])
            mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(acc_t)
            scale = tl.load(scale_ptr + index, mask=mask, other=1.0).to(acc_t)
            std, log_std, _, _ = std_terms(scale, shift_v, P, F64)
            if SAMPLE:
                z = mu + std * normals[lane].to(acc_t)
            else:
                z = mu
            tl.store(z_ptr + index, z.to(z_ptr.dtype.element_ty), mask=mask)
            kl += tl.sum(tl.where(mask, kl_element(mu, std, log_std), 0.0), axis=1)
    tl.store(kl_ptr + row, kl, mask=row_ok)


@triton.jit(do_not_specialize=["shift_bits"])
def _backward_kernel(grad_z_ptr, grad_kl_ptr, mu_ptr, scale_ptr, grad_mu_ptr, grad_scale_ptr, rng_ptr,
                     rows, cols, row_blocks, shift, shift_bits,
                     P: tl.constexpr, SAMPLE: tl.constexpr, F64: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr):
    acc_t = tl.float64 if F64 else tl.float32
    shift_v = exact_scalar(shift, shift_bits, F64)
    row, row_ok, start, end = _row_blocks(tl.program_id(0), rows, cols, BLOCK_R)
    seed = tl.load(rng_ptr)
    offset = tl.load(rng_ptr + 1)
    grad_kl = tl.load(grad_kl_ptr + row, mask=row_ok, other=0.0).to(acc_t)
    for q0 in range(0, row_blocks, BLOCK_Q):
        block = (start >> 2)[:, None] + q0 + tl.arange(0, BLOCK_Q).to(tl.int64)[None, :]
        if SAMPLE:
            normals = normal_block(block, seed, offset)
        for lane in tl.static_range(4):
            index = block * 4 + lane
            mask = row_ok[:, None] & (index >= start[:, None]) & (index < end[:, None])
            mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(acc_t)
            scale = tl.load(scale_ptr + index, mask=mask, other=1.0).to(acc_t)
            grad_z = tl.load(grad_z_ptr + index, mask=mask, other=0.0).to(acc_t)
            std, _, dstd, dlog_std = std_terms(scale, shift_v, P, F64)
            grad_mu = grad_z + grad_kl[:, None] * mu
            grad_scale = grad_kl[:, None] * kl_element_dscale(std, dstd, dlog_std)
            if SAMPLE:
                grad_scale += grad_z * normals[lane].to(acc_t) * dstd
            tl.store(grad_mu_ptr + index, grad_mu.to(grad_mu_ptr.dtype.element_ty), mask=mask)
            tl.store(grad_scale_ptr + index, grad_scale.to(grad_scale_ptr.dtype.element_ty), mask=mask)


def _launch_shape(rows, cols):
    """(grid, row_blocks, BLOCK_R, BLOCK_Q): row_blocks is the most Philox blocks a row touches."""
    row_blocks = cols // 4 if cols % 4 == 0 else (cols + 2) // 4 + 1
    block_q = min(triton.next_power_of_2(row_blocks), _MAX_BLOCK_Q)
    block_r = min(max(1, _BLOCKS_PER_PROGRAM // block_q), triton.next_power_of_2(rows))
    return (triton.cdiv(rows, block_r),), row_blocks, block_r, block_q


def _scalars(mu, parameterization, shift, sample):
    """The trailing arguments: shift as float32 and as a double's bits, and the constexprs."""
    return (float(shift), double_bits(shift)), dict(
        P=int(parameterization), SAMPLE=bool(sample), F64=mu.dtype == torch.float64)


def forward(mu, scale, rng, parameterization, shift, sample):
    mu, scale = mu.contiguous(), scale.contiguous()
    z = torch.empty_like(mu)
    kl = torch.empty(mu.shape[:-1], dtype=accumulation_dtype(mu.dtype), device=mu.device)
    rows, cols = math.prod(mu.shape[:-1]), mu.shape[-1]
    if rows == 0:
        return z, kl
    if cols == 0:
        return z, kl.zero_()
    grid, row_blocks, block_r, block_q = _launch_shape(rows, cols)
    shifts, constexprs = _scalars(mu, parameterization, shift, sample)
    launch(_forward_kernel, grid, mu, scale, z, kl, rng, rows, cols, row_blocks, *shifts,
           BLOCK_R=block_r, BLOCK_Q=block_q, **constexprs)
    return z, kl


def backward(grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample):
    mu, scale = mu.contiguous(), scale.contiguous()
    kl_dtype = accumulation_dtype(mu.dtype)
    grad_z = torch.zeros_like(mu) if grad_z is None else grad_z.to(mu.dtype).expand(mu.shape).contiguous()
    if grad_kl is None:
        grad_kl = torch.zeros(mu.shape[:-1], dtype=kl_dtype, device=mu.device)
    else:
        grad_kl = grad_kl.to(kl_dtype).expand(mu.shape[:-1]).contiguous()
    grad_mu, grad_scale = torch.empty_like(mu), torch.empty_like(mu)
    rows, cols = math.prod(mu.shape[:-1]), mu.shape[-1]
    if rows == 0 or cols == 0:
        return grad_mu, grad_scale
    grid, row_blocks, block_r, block_q = _launch_shape(rows, cols)
    shifts, constexprs = _scalars(mu, parameterization, shift, sample)
    launch(_backward_kernel, grid, grad_z, grad_kl, mu, scale, grad_mu, grad_scale, rng, rows, cols, row_blocks,
           *shifts, BLOCK_R=block_r, BLOCK_Q=block_q, **constexprs)
    return grad_mu, grad_scale
