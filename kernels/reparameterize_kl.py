"""Triton kernels of the fused reparameterize + KL operator, and their host wrappers.

One program handles BLOCK_R rows and walks their columns in BLOCK_C chunks, so the
per-row KL sum stays in registers. eps is regenerated from (seed, offset) by the
backward; it is never stored. The math is kernels/_math.py (mirror of csrc/include).
"""
import math

import torch
import triton
import triton.language as tl

from mibcore.kernels._launch import device_context
from mibcore.kernels._math import normal_at, std_terms
from mibcore.constants import accumulation_dtype

_MAX_BLOCK_C = 2048
_BLOCK_ELEMENTS = 4096


@triton.jit
def _forward_kernel(mu_ptr, scale_ptr, z_ptr, kl_ptr, rng_ptr, rows, cols, shift,
                    P: tl.constexpr, SAMPLE: tl.constexpr, F64: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    acc_t = tl.float64 if F64 else tl.float32
    row = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    row_ok = row < rows
    seed = tl.load(rng_ptr)
    offset = tl.load(rng_ptr + 1)
    kl = tl.zeros([BLOCK_R], dtype=acc_t)
    for c0 in range(0, cols, BLOCK_C):
        col = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        mask = row_ok[:, None] & (col[None, :] < cols)
        index = row[:, None] * cols + col[None, :]
        mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(acc_t)
        scale = tl.load(scale_ptr + index, mask=mask, other=1.0).to(acc_t)
        std, log_std, _, _ = std_terms(scale, shift, P, F64)
        if SAMPLE:
            z = mu + std * normal_at(index, seed, offset).to(acc_t)
        else:
            z = mu
        tl.store(z_ptr + index, z.to(z_ptr.dtype.element_ty), mask=mask)
        kl_element = 0.5 * (mu * mu + std * std - 2.0 * log_std - 1.0)
        kl += tl.sum(tl.where(mask, kl_element, 0.0), axis=1)
    tl.store(kl_ptr + row, kl, mask=row_ok)


@triton.jit
def _backward_kernel(grad_z_ptr, grad_kl_ptr, mu_ptr, scale_ptr, grad_mu_ptr, grad_scale_ptr, rng_ptr,
                     rows, cols, shift,
                     P: tl.constexpr, SAMPLE: tl.constexpr, F64: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    acc_t = tl.float64 if F64 else tl.float32
    row = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    row_ok = row < rows
    seed = tl.load(rng_ptr)
    offset = tl.load(rng_ptr + 1)
    grad_kl = tl.load(grad_kl_ptr + row, mask=row_ok, other=0.0).to(acc_t)
    for c0 in range(0, cols, BLOCK_C):
        col = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        mask = row_ok[:, None] & (col[None, :] < cols)
        index = row[:, None] * cols + col[None, :]
        mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(acc_t)
        scale = tl.load(scale_ptr + index, mask=mask, other=1.0).to(acc_t)
        grad_z = tl.load(grad_z_ptr + index, mask=mask, other=0.0).to(acc_t)
        std, _, dstd, dlog_std = std_terms(scale, shift, P, F64)
        grad_mu = grad_z + grad_kl[:, None] * mu
        grad_scale = grad_kl[:, None] * (std * dstd - dlog_std)
        if SAMPLE:
            grad_scale += grad_z * normal_at(index, seed, offset).to(acc_t) * dstd
        tl.store(grad_mu_ptr + index, grad_mu.to(grad_mu_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_scale_ptr + index, grad_scale.to(grad_scale_ptr.dtype.element_ty), mask=mask)


def _launch_shape(rows, cols):
    block_c = min(triton.next_power_of_2(max(cols, 1)), _MAX_BLOCK_C)
    block_r = max(1, _BLOCK_ELEMENTS // block_c)
    block_r = min(block_r, triton.next_power_of_2(max(rows, 1)))
    return (triton.cdiv(rows, block_r),), block_r, block_c


def forward(mu, scale, rng, parameterization, shift, sample):
    mu, scale = mu.contiguous(), scale.contiguous()
    z = torch.empty_like(mu)
    kl = torch.empty(mu.shape[:-1], dtype=accumulation_dtype(mu.dtype), device=mu.device)
    rows, cols = math.prod(mu.shape[:-1]), mu.shape[-1]
    if rows == 0:
        return z, kl
    if cols == 0:
        return z, kl.zero_()
    grid, block_r, block_c = _launch_shape(rows, cols)
    with device_context(mu):
        _forward_kernel[grid](
            mu, scale, z, kl, rng, rows, cols, float(shift),
            P=int(parameterization), SAMPLE=bool(sample), F64=mu.dtype == torch.float64,
            BLOCK_R=block_r, BLOCK_C=block_c,
        )
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
    grid, block_r, block_c = _launch_shape(rows, cols)
    with device_context(mu):
        _backward_kernel[grid](
            grad_z, grad_kl, mu, scale, grad_mu, grad_scale, rng, rows, cols, float(shift),
            P=int(parameterization), SAMPLE=bool(sample), F64=mu.dtype == torch.float64,
            BLOCK_R=block_r, BLOCK_C=block_c,
        )
    return grad_mu, grad_scale
