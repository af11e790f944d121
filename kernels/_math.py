"""Triton mirror of csrc/include/mibcore/math.h and philox.h (the per-element math).

Each function here has the C++ function of the same name there; keep them in step.
Float32 uses the same Cephes polynomials as the C++ code; float64 uses tl.exp/tl.log,
as the C++ float64 path uses the C library.
"""
import os

import triton
import triton.language as tl

from mibcore import constants

# Read when kernel modules are imported, as Triton reads it (the conftest sets it first).
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")
SOFTPLUS_THRESHOLD = tl.constexpr(constants.SOFTPLUS_THRESHOLD)
SOFTPLUS = tl.constexpr(constants.PARAMETERIZATION_IDS["softplus"])
LOGVAR = tl.constexpr(constants.PARAMETERIZATION_IDS["logvar"])
STD = tl.constexpr(constants.PARAMETERIZATION_IDS["std"])


@triton.jit
def _pow2i(n):
    return ((n + 127).to(tl.uint32) << 23).to(tl.float32, bitcast=True)


@triton.jit
def fast_exp(x, F64: tl.constexpr):
    if F64:
        return tl.exp(x)
    else:
        kmax = 88.72283935546875
        kmin = -103.97208404541015
        xc = tl.where(x < kmin, kmin, x)
        xc = tl.where(xc > kmax, kmax, xc)
        n = tl.floor(xc * 1.44269504088896341 + 0.5)
        r = xc - n * 0.693359375
        r = r - n * -2.12194440e-4
        r2 = r * r
        p = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * r2 + r + 1.0
        ni = n.to(tl.int32)
        n1 = ni // 2  # C++ division truncates toward zero; so does Triton's on int32
        y = p * _pow2i(n1) * _pow2i(ni - n1)
        y = tl.where(x > kmax, float("inf"), y)
        y = tl.where(x < kmin, 0.0, y)
        return tl.where(x != x, x, y)


@triton.jit
def fast_log(x, F64: tl.constexpr):
    if F64:
        return tl.log(x)
    else:
        tiny = x < 1.17549435e-38
        xs = tl.where(tiny, x * 8388608.0, x)
        bits = xs.to(tl.uint32, bitcast=True)
        e = ((bits >> 23) & 0xFF).to(tl.int32) - 126
        e = tl.where(tiny, e - 23, e)
        m = ((bits & 0x007FFFFF) | 0x3F000000).to(tl.float32, bitcast=True)
        small = m < 0.707106781186547524
        e = tl.where(small, e - 1, e)
        m = tl.where(small, m + m - 1.0, m - 1.0)
        fe = e.to(tl.float32)
        z = m * m
        p = 7.0376836292e-2
        p = p * m - 1.1514610310e-1
        p = p * m + 1.1676998740e-1
        p = p * m - 1.2420140846e-1
        p = p * m + 1.4249322787e-1
        p = p * m - 1.6668057665e-1
        p = p * m + 2.0000714765e-1
        p = p * m - 2.4999993993e-1
        p = p * m + 3.3333331174e-1
        y = p * m * z
        y = y + fe * -2.12194440e-4
        y = y - 0.5 * z
        r = m + y
        r = r + fe * 0.693359375
        r = tl.where(x == float("inf"), float("inf"), r)
        r = tl.where(x == 0.0, float("-inf"), r)
        r = tl.where(x < 0.0, float("nan"), r)
        return tl.where(x != x, x, r)


@triton.jit
def log1p_unit(t, F64: tl.constexpr):
    """log(1 + t) for t in [0, 1]; see math.h log1p_unit."""
    if F64:
        u = 1.0 + t
        d = u - 1.0
        return tl.where(d == 0.0, t, tl.log(u) * (t / tl.where(d == 0.0, 1.0, d)))
    else:
        s = t / (2.0 + t)
        s2 = s * s
        p = 1.0 / 15.0
        p = p * s2 + 1.0 / 13.0
        p = p * s2 + 1.0 / 11.0
        p = p * s2 + 1.0 / 9.0
        p = p * s2 + 1.0 / 7.0
        p = p * s2 + 1.0 / 5.0
        p = p * s2 + 1.0 / 3.0
        return 2.0 * s + 2.0 * s * s2 * p


@triton.jit
def std_terms(scale, shift, P: tl.constexpr, F64: tl.constexpr):
    """(std, log std, d std / d scale, d log std / d scale); see math.h std_terms."""
    if P == SOFTPLUS:
        # As math.h: softplus = max(x, 0) + log1p(e), sigmoid = (x > 0 ? 1 : e) / (1 + e), e = exp(-|x|).
        x = scale + shift
        e = fast_exp(tl.where(x > 0.0, -x, x), F64)
        sp = tl.where(x > 0.0, x, 0.0) + log1p_unit(e, F64)
        sp = tl.where((x > SOFTPLUS_THRESHOLD) | (x != x), x, sp)
        sig = tl.where(x > 0.0, 1.0, e) / (1.0 + e)
        deep = x < -SOFTPLUS_THRESHOLD
        safe_sp = tl.where(deep, 1.0, sp)
        log_std = tl.where(deep, x, fast_log(safe_sp, F64))
        dlog_std = tl.where(deep, 1.0, sig / safe_sp)
        return sp, log_std, sig, dlog_std
    elif P == LOGVAR:
        std = fast_exp(0.5 * scale, F64)
        return std, 0.5 * scale, 0.5 * std, tl.full(scale.shape, 0.5, scale.dtype)
    else:
        return scale, fast_log(scale, F64), tl.full(scale.shape, 1.0, scale.dtype), 1.0 / scale


@triton.jit
def exact_scalar(value, bits, F64: tl.constexpr):
    """A host float scalar at the kernel's precision: for float64 the double whose bits travel
    in the int64 `bits` (a Python float argument arrives as float32), else the float32 `value`."""
    if F64:
        return bits.to(tl.int64).to(tl.float64, bitcast=True)
    else:
        return value


@triton.jit
def uniform_from_bits(r):
    return ((r >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def sincos_turns(t):
    quarter = tl.floor(t * 4.0 + 0.5)
    f = t - quarter * 0.25
    x = f * 6.28318530717958648
    z = x * x
    s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * x + x
    c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0
    q = quarter.to(tl.int32) & 3
    cs = tl.where(q == 0, c, tl.where(q == 1, -s, tl.where(q == 2, -c, s)))
    sn = tl.where(q == 0, s, tl.where(q == 1, c, tl.where(q == 2, -s, -c)))
    return sn, cs


@triton.jit
def philox_block(block, seed, offset):
    """The 4 words of Philox block `block` (int64): counter (block lo, block hi, offset lo, offset hi)."""
    return tl.philox(
        seed,
        (block & 0xFFFFFFFF).to(tl.uint32),
        (block >> 32).to(tl.uint32),
        (offset & 0xFFFFFFFF).to(tl.uint32),
        (offset >> 32).to(tl.uint32),
    )


@triton.jit
def _philox_words(index, seed, offset):
    return philox_block(index >> 2, seed, offset)


@triton.jit
def dropout_scale_at(index, seed, offset, keep_prob, inv_keep):
    """1 / keep_prob where flat element `index` is kept, else 0; see philox.h dropout_scale_at."""
    r0, r1, r2, r3 = _philox_words(index, seed, offset)
    lane = index & 3
    bits = tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3)))
    return tl.where(uniform_from_bits(bits) <= keep_prob, inv_keep, 0.0)


@triton.jit
def _box_muller(ra, rb):
    """The two float32 normals (cos, sin) of one Box-Muller pair of words; see philox.h."""
    rad = tl.sqrt_rn(-2.0 * fast_log(uniform_from_bits(ra), False))
    s, c = sincos_turns(uniform_from_bits(rb))
    return rad * c, rad * s


@triton.jit
def normals_of_block(block, seed, offset):
    """The float32 normals of flat elements 4 block .. 4 block + 3: one Philox call, and one
    Box-Muller pair for each two of them (words 0, 1 give lanes 0, 1; words 2, 3 lanes 2, 3)."""
    r0, r1, r2, r3 = philox_block(block, seed, offset)
    n0, n1 = _box_muller(r0, r1)
    n2, n3 = _box_muller(r2, r3)
    return n0, n1, n2, n3


@triton.jit
def mma(a, b, acc_t: tl.constexpr, PRECISION: tl.constexpr):
    """tl.dot(a, b) accumulated in acc_t. The interpreter multiplies bf16 operands as their raw
    bits (np.matmul of uint16), so there every operand is first widened to acc_t (exact for
    16-bit operands; the products and fp32 sums are those of the tensor cores)."""
    if INTERPRETED:
        return tl.dot(a.to(acc_t), b.to(acc_t), out_dtype=acc_t)
    else:
        return tl.dot(a, b, out_dtype=acc_t, input_precision=PRECISION)
