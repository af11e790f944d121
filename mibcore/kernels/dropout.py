"""Triton kernels of the dropout operators (dropout, dropout_add, relu_dropout) and their
host wrappers.

One program handles BLOCK elements as BLOCK / 4 Philox blocks: one Philox call gives the keep
decisions of 4 consecutive elements (the contract of csrc/include/mibcore/philox.h), so no
block is computed twice. Arithmetic in float32 (float64 for float64 tensors), rounded once.
The float64 scale 1 / (1 - p) travels as the bits of a double in an int64 argument, because a
Python float argument is passed to Triton as float32.
"""
import torch
import triton
import triton.language as tl

from mibcore.kernels._launch import double_bits, launch
from mibcore.kernels._math import exact_scalar, lanes_of, philox_block, uniform_from_bits

_BLOCK = 1024
DROPOUT, ADD, RELU = 0, 1, 2  # the MODE of _dropout_kernel


@triton.jit
def _scale_of(bits, keep_prob, inv_keep, inv_keep64_bits, F64: tl.constexpr):
    inv = exact_scalar(inv_keep, inv_keep64_bits, F64)
    return tl.where(uniform_from_bits(bits) <= keep_prob, inv, 0.0)


@triton.jit(do_not_specialize=["inv_keep64_bits"])
def _dropout_kernel(x_ptr, h_ptr, y_ptr, rng_ptr, n, keep_prob, inv_keep, inv_keep64_bits,
                    MODE: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    """y = h * scale (MODE 0), x + h * scale (MODE 1), relu(h) * scale (MODE 2)."""
    acc_t = tl.float64 if F64 else tl.float32
    seed = tl.load(rng_ptr)
    offset = tl.load(rng_ptr + 1)
    start = tl.program_id(0).to(tl.int64) * BLOCK
    words = lanes_of(philox_block((start >> 2) + tl.arange(0, BLOCK // 4).to(tl.int64), seed, offset))
    index = start + tl.arange(0, BLOCK).to(tl.int64)
    ok = index < n
    h = tl.load(h_ptr + index, mask=ok, other=0.0).to(acc_t)
    if MODE == 2:
        h = tl.where(h > 0.0, h, tl.where(h != h, h, 0.0))  # relu, NaN kept (as torch.relu)
    y = h * _scale_of(words, keep_prob, inv_keep, inv_keep64_bits, F64)
    if MODE == 1:
        y = tl.load(x_ptr + index, mask=ok, other=0.0).to(acc_t) + y
    tl.store(y_ptr + index, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["inv_keep64_bits"])
def _relu_dropout_backward_kernel(grad_ptr, y_ptr, out_ptr, n, inv_keep, inv_keep64_bits,
                                  F64: tl.constexpr, BLOCK: tl.constexpr):
    """grad * (y > 0) / keep_prob: y > 0 exactly where the input was > 0 and kept."""
    acc_t = tl.float64 if F64 else tl.float32
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    ok = index < n
    grad = tl.load(grad_ptr + index, mask=ok, other=0.0).to(acc_t)
    y = tl.load(y_ptr + index, mask=ok, other=0.0).to(acc_t)
    inv = exact_scalar(inv_keep, inv_keep64_bits, F64)
    tl.store(out_ptr + index, (grad * tl.where(y > 0.0, inv, 0.0)).to(out_ptr.dtype.element_ty), mask=ok)


def _scalars(p):
    """(keep_prob as float32, 1 / keep_prob as float32, 1 / keep_prob as the bits of a double)."""
    keep = 1.0 - float(p)
    inv = 1.0 / keep
    return keep, inv, double_bits(inv)


def _launch(mode, x, h, p, rng):
    h = h.contiguous()
    x = h if x is None else x.contiguous()
    y = torch.empty_like(h)
    n = h.numel()
    if n == 0:
        return y
    keep, inv, inv_bits = _scalars(p)
    launch(_dropout_kernel, (triton.cdiv(n, _BLOCK),), x, h, y, rng, n, keep, inv, inv_bits,
           MODE=mode, F64=h.dtype == torch.float64, BLOCK=_BLOCK)
    return y


def dropout(x, p, rng):
    return _launch(DROPOUT, None, x, p, rng)


def dropout_add(x, h, p, rng):
    return _launch(ADD, x, h, p, rng)


def relu_dropout(x, p, rng):
    return _launch(RELU, None, x, p, rng)


def relu_dropout_backward(grad_y, y, p):
    grad_y, y = grad_y.contiguous(), y.contiguous()
    out = torch.empty_like(y)
    n = y.numel()
    if n == 0:
        return out
    _, inv, inv_bits = _scalars(p)
    launch(_relu_dropout_backward_kernel, (triton.cdiv(n, _BLOCK),), grad_y, y, out, n, inv, inv_bits,
           F64=y.dtype == torch.float64, BLOCK=_BLOCK)
    return out
