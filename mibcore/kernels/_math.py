"""Triton mirror of csrc/include/mibcore/math.h and philox.h (the per-element math).

Each function here that has a C++ twin has its name (fast_exp, fast_log, log1p_unit, std_terms,
kl_element, kl_element_dscale, pow2i, uniform_from_bits, sincos_turns, philox_block, box_muller,
normal_block, dropout_scale_at) and computes the same float32 arithmetic, in the same order,
with the same constants: those of mibcore/_math_tables.py, the one source from which the build
also generates the C++ header mibcore/math_tables.h (C++ kExpP0 is EXP_P0 here).
tests/test_math_mirror.py and test_math_words.py compare every pair on special values. Functions without a C++ twin:
exact_scalar (how a float64 scalar reaches a kernel), lanes_of (Philox words in element order) and mma (tl.dot under the interpreter).
Float64 uses tl.exp/tl.log, as the C++ float64 path uses the C library.
"""
import os

import triton
import triton.language as tl

from mibcore import _math_tables as T
from mibcore import constants

# Read when kernel modules are imported, as Triton reads it (the conftest sets it first).
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")
SOFTPLUS_THRESHOLD = tl.constexpr(T.SOFTPLUS_THRESHOLD)
SOFTPLUS = tl.constexpr(constants.PARAMETERIZATION_IDS["softplus"])
LOGVAR = tl.constexpr(constants.PARAMETERIZATION_IDS["logvar"])
STD = tl.constexpr(constants.PARAMETERIZATION_IDS["std"])

# The table's constants as Triton constexprs (a tuple NAME as NAME0, NAME1, ...).
EXP_MAX_ARG, EXP_MIN_ARG = tl.constexpr(T.EXP_MAX_ARG), tl.constexpr(T.EXP_MIN_ARG)
LOG2E, LN2_HI, LN2_LO = tl.constexpr(T.LOG2E), tl.constexpr(T.LN2_HI), tl.constexpr(T.LN2_LO)
EXP_P0, EXP_P1, EXP_P2, EXP_P3, EXP_P4, EXP_P5 = map(tl.constexpr, T.EXP_P)
# MIN_NORMAL as its float32 (2^-126, as the C++ header's literal): the table's decimal is a hair below
# float32's normal range, where Triton would type the constant float64 and compare in float64.
MIN_NORMAL = tl.constexpr(T.float32(T.MIN_NORMAL))
SUBNORMAL_SCALE, SQRT_HALF = tl.constexpr(T.SUBNORMAL_SCALE), tl.constexpr(T.SQRT_HALF)
LOG_P0, LOG_P1, LOG_P2, LOG_P3, LOG_P4, LOG_P5, LOG_P6, LOG_P7, LOG_P8 = map(tl.constexpr, T.LOG_P)
LOG1P_UNIT_P0, LOG1P_UNIT_P1, LOG1P_UNIT_P2, LOG1P_UNIT_P3, LOG1P_UNIT_P4, LOG1P_UNIT_P5, LOG1P_UNIT_P6 = map(
    tl.constexpr, T.LOG1P_UNIT_P)
UNIFORM_SCALE, TWO_PI = tl.constexpr(T.UNIFORM_SCALE), tl.constexpr(T.TWO_PI)
SIN_P0, SIN_P1, SIN_P2 = map(tl.constexpr, T.SIN_P)
COS_P0, COS_P1, COS_P2 = map(tl.constexpr, T.COS_P)


@triton.jit
def pow2i(n):
    """2^n as a float32 for n in [-126, 127] (int32), from the exponent bits."""
    return ((n + 127).to(tl.uint32) << 23).to(tl.float32, bitcast=True)


@triton.jit
def fast_exp(x, F64: tl.constexpr):
    if F64:
        return tl.exp(x)
    else:
        xc = tl.where(x < EXP_MIN_ARG, EXP_MIN_ARG, x)
        xc = tl.where(xc > EXP_MAX_ARG, EXP_MAX_ARG, xc)
        n = tl.floor(xc * LOG2E + 0.5)
        r = xc - n * LN2_HI
        r = r - n * LN2_LO
        r2 = r * r
        p = EXP_P0
        p = p * r + EXP_P1
        p = p * r + EXP_P2
        p = p * r + EXP_P3
        p = p * r + EXP_P4
        p = p * r + EXP_P5
        p = p * r2 + r + 1.0
        ni = n.to(tl.int32)
        n1 = ni // 2  # C++ division truncates toward zero; so does Triton's on int32
        y = p * pow2i(n1) * pow2i(ni - n1)
        y = tl.where(x > EXP_MAX_ARG, float("inf"), y)
        y = tl.where(x < EXP_MIN_ARG, 0.0, y)
        return tl.where(x != x, x, y)


@triton.jit
def fast_log(x, F64: tl.constexpr):
    if F64:
        return tl.log(x)
    else:
        tiny = x < MIN_NORMAL
        xs = tl.where(tiny, x * SUBNORMAL_SCALE, x)
        bits = xs.to(tl.uint32, bitcast=True)
        e = ((bits >> 23) & 0xFF).to(tl.int32) - 126
        e = tl.where(tiny, e - 23, e)
        m = ((bits & 0x007FFFFF) | 0x3F000000).to(tl.float32, bitcast=True)
        small = m < SQRT_HALF
        e = tl.where(small, e - 1, e)
        m = tl.where(small, m + m - 1.0, m - 1.0)
        fe = e.to(tl.float32)
        z = m * m
        p = LOG_P0
        p = p * m + LOG_P1
        p = p * m + LOG_P2
        p = p * m + LOG_P3
        p = p * m + LOG_P4
        p = p * m + LOG_P5
        p = p * m + LOG_P6
        p = p * m + LOG_P7
        p = p * m + LOG_P8
        y = p * m * z
        y = y + fe * LN2_LO
        y = y - 0.5 * z
        r = m + y
        r = r + fe * LN2_HI
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
        p = LOG1P_UNIT_P0
        p = p * s2 + LOG1P_UNIT_P1
        p = p * s2 + LOG1P_UNIT_P2
        p = p * s2 + LOG1P_UNIT_P3
        p = p * s2 + LOG1P_UNIT_P4
        p = p * s2 + LOG1P_UNIT_P5
        p = p * s2 + LOG1P_UNIT_P6
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
def kl_element(mu, std, log_std):
    """KL(N(mu, std^2) || N(0, 1)) of one element, 0.5 (mu^2 + std^2 - 2 log std - 1); see
    math.h kl_element (which takes std_terms' struct; here its two fields)."""
    return 0.5 * (mu * mu + std * std - 2.0 * log_std - 1.0)


@triton.jit
def kl_element_dscale(std, dstd, dlog_std):
    """d kl_element / d scale = std d std - d log std; see math.h kl_element_dscale."""
    return std * dstd - dlog_std


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
    """A uniform in (0, 1] with 24 random bits; see philox.h uniform_from_bits."""
    return ((r >> 8) + 1).to(tl.float32) * UNIFORM_SCALE


@triton.jit
def sincos_turns(t):
    """(sin, cos) of 2 pi t for t in [0, 1]; see philox.h sincos_turns."""
    quarter = tl.floor(t * 4.0 + 0.5)
    f = t - quarter * 0.25
    x = f * TWO_PI
    z = x * x
    s = ((SIN_P0 * z + SIN_P1) * z + SIN_P2) * z * x + x
    c = ((COS_P0 * z + COS_P1) * z + COS_P2) * z * z - 0.5 * z + 1.0
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
def lanes_of(words):
    """The 4 words of N Philox blocks (4 tensors of shape [..., N]) as one tensor [..., 4 N] in
    element order (word k of block b is element 4 b + k). tl.join keeps each block's 4 words in one
    thread, so that loads and stores of the 4 consecutive elements can be one vector access."""
    r0, r1, r2, r3 = words
    joined = tl.join(tl.join(r0, r2), tl.join(r1, r3))  # [..., N, 2, 2]: [b, i, j] is word 2 i + j
    return tl.reshape(joined, joined.shape[:-3] + [4 * joined.shape[-3]])


@triton.jit
def dropout_scale_at(index, seed, offset, keep_prob, inv_keep):
    """1 / keep_prob where flat element `index` is kept, else 0; see philox.h dropout_scale_at."""
    r0, r1, r2, r3 = philox_block(index >> 2, seed, offset)
    lane = index & 3
    bits = tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3)))
    return tl.where(uniform_from_bits(bits) <= keep_prob, inv_keep, 0.0)


@triton.jit
def box_muller(ra, rb):
    """The two float32 normals (cos, sin) of one Box-Muller pair of words; see philox.h box_muller."""
    rad = tl.sqrt_rn(-2.0 * fast_log(uniform_from_bits(ra), False))
    s, c = sincos_turns(uniform_from_bits(rb))
    return rad * c, rad * s


@triton.jit
def normal_block(block, seed, offset):
    """The float32 normals of flat elements 4 block .. 4 block + 3 (philox.h normal_block): one
    Philox call, and one Box-Muller pair for each two of them (words 0, 1 give lanes 0, 1; words
    2, 3 lanes 2, 3)."""
    r0, r1, r2, r3 = philox_block(block, seed, offset)
    n0, n1 = box_muller(r0, r1)
    n2, n3 = box_muller(r2, r3)
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
