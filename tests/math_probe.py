"""What tests/test_math_*.py share: the grids of special values, the ulp bounds, the C++ (through
the test-only op torch.ops.mibcore.math_probe) and Triton evaluations of each mirrored function,
and the float64 oracles."""
import importlib.util
import math
import os

import numpy as np
import pytest
import torch

import mibcore
from mibcore import _extension, _math_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_extension = pytest.mark.skipif(not _extension.available(), reason="mibcore._C is not built")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the grid holds inf, NaN and overflows

F32 = np.float32
TINY = float(np.finfo(F32).smallest_subnormal)
MIN_NORMAL = float(np.finfo(F32).tiny)
MAX = float(np.finfo(F32).max)
INF, NAN = math.inf, math.nan


def _around(*values):
    """Each value (as float32) with its float32 neighbours."""
    out = []
    for v in values:
        f = F32(v)
        out += [np.nextafter(f, F32(-INF)), f, np.nextafter(f, F32(INF))]
    return out


def _grid(lo_exp=-45, hi_exp=38):
    special = [0.0, -0.0, TINY, -TINY, 3 * TINY, 1e-40, -1e-40, MIN_NORMAL / 2, MIN_NORMAL, -MIN_NORMAL, 1e-30,
               1.0, -1.0, 0.5, 2.0, math.sqrt(0.5), math.sqrt(2.0), 1e30, -1e30, 3e38, MAX, -MAX, INF, -INF, NAN]
    thresholds = _around(_math_tables.EXP_MAX_ARG, _math_tables.EXP_MIN_ARG, -87.33654, 88.0, -88.0, 20.0, -20.0,
                         1.0, _math_tables.SQRT_HALF, 2 * _math_tables.SQRT_HALF)
    sweep = [s * 10.0 ** (e / 4) for e in range(4 * lo_exp, 4 * hi_exp) for s in (1.0, -1.0)]
    linear = list(np.linspace(-110.0, 95.0, 411))
    values = np.array(special + thresholds + sweep + linear, dtype=np.float64)
    with np.errstate(over="ignore"):
        return torch.from_numpy(values.astype(F32))


GRID = _grid()
UNIT = torch.from_numpy(np.concatenate([np.array([0.0, TINY, MIN_NORMAL, 1e-20, 1e-7, 0.5, 1.0], F32),
                                        np.linspace(0, 1, 257, dtype=F32)]))
TURNS = torch.from_numpy(np.concatenate([np.linspace(0, 1, 1025, dtype=F32),
                                         np.array(_around(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875), F32),
                                         np.array([2 ** -24, 1.0 - 2 ** -24], F32)]))
WORDS = torch.tensor([0, 1, 255, 256, 257, 0x7FFFFFFF, 0x80000000, 0xFFFFFEFF, 0xFFFFFF00, 0xFFFFFFFF]
                     + [(i * 0x9E3779B9 + 12345) & 0xFFFFFFFF for i in range(246)], dtype=torch.int64)
SEED, OFFSET = 0x123456789ABCDEF, (1 << 32) + 7
BLOCKS = torch.tensor([0, 1, 2, 3, (1 << 32) - 1, 1 << 32, (1 << 40) + 5] + list(range(100, 157)), dtype=torch.int64)

# Bounds in float32 ulps (of the larger magnitude of the two results; results below 2^-100 in
# magnitude are compared absolutely, against one subnormal step). MIRROR_ULPS: C++ vector or
# another level against C++ baseline scalar (FMAs round once where the scalar code rounds twice).
# ORACLE_ULPS: against float64 (Cephes' polynomials are ~1 ulp; composition adds a few).
MIRROR_ULPS = {"fast_exp": 1, "fast_log": 1, "log1p_unit": 2, "std_terms": 4, "kl_element": 4,
               "kl_element_dscale": 4, "box_muller": 8, "normal_block": 8, "sincos_turns": 2}
ORACLE_ULPS = {"fast_exp": 2, "fast_log": 2, "log1p_unit": 3, "std_terms": 8, "kl_element": 4,
               "kl_element_dscale": 4, "sincos_turns": 4, "box_muller": 16}


def _ulps(a, b, terms=None):
    """|a - b| in float32 ulps of max(|a|, |b|, terms), elementwise (both NaN: 0; one NaN: inf)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    same = (a == b) | both_nan
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.abs(a), np.abs(b))
        if terms is not None:
            scale = np.maximum(scale, np.nan_to_num(np.abs(np.asarray(terms, np.float64)), nan=0.0))
        ulp = np.spacing(scale.astype(F32)).astype(np.float64)
        ulp = np.maximum(ulp, TINY)
        d = np.abs(a - b) / ulp
    d = np.where(same, 0.0, d)
    return np.where(np.isnan(d) | (np.isnan(a) != np.isnan(b)), np.inf, d)


def _assert_close(got, want, ulps, what, inputs=None, scale=None):
    """Within `ulps` float32 ulps of max(|got|, |want|, scale): `scale` is the magnitude of the terms
    a result is the difference of (where they cancel, the error is relative to them)."""
    with np.errstate(over="ignore"):  # (an oracle is rounded to float32 first: above FLT_MAX is inf)
        want = np.asarray(want, np.float64).astype(F32) if np.asarray(got).dtype == F32 else want
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    d = _ulps(got, want, scale)
    bad = np.argwhere(d > ulps)
    if bad.size:
        i = tuple(bad[0])
        where = f" at input {np.asarray(inputs)[..., i[-1]]}" if inputs is not None else ""
        pytest.fail(f"{what}: {len(bad)} values beyond {ulps} ulp, worst {d.max():.3g} ulp; first: "
                    f"{got[i]!r} vs {want[i]!r}{where}")


def _assert_bits(got, want, what, inputs=None):
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype.kind == "f":
        same = (got.view(np.uint32 if got.dtype == F32 else np.uint64) ==
                want.view(np.uint32 if want.dtype == F32 else np.uint64)) | (np.isnan(got) & np.isnan(want))
    else:
        same = got == want
    if not same.all():
        i = tuple(np.argwhere(~same)[0])
        where = f" at input {np.asarray(inputs)[..., i[-1]]}" if inputs is not None else ""
        pytest.fail(f"{what}: {(~same).sum()} values differ in their bits; first {got[i]!r} vs {want[i]!r}{where}")


# ---------------------------------------------------------------- the implementations
def _levels():
    if not _extension.available():
        return ["baseline"]
    return mibcore.cpu_isa.available()


def cpp(name, x, impl="scalar", level="baseline"):
    """[outputs, n] from torch.ops.mibcore.math_probe at `level`."""
    x = torch.stack(list(x)) if isinstance(x, (list, tuple)) else x.reshape(1, -1)
    with mibcore.cpu_isa.use(level):
        return torch.ops.mibcore.math_probe(name, impl, x.contiguous()).numpy()


if HAS_TRITON:
    import triton
    import triton.language as tl

    from mibcore.kernels import _math as M

    @triton.jit
    def _float_kernel(x_ptr, out_ptr, n, seed, offset, FN: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        ok = i < n
        dt = tl.float64 if F64 else tl.float32
        a = tl.load(x_ptr + i, mask=ok, other=1.0).to(dt)
        b = tl.load(x_ptr + n + i, mask=ok & (FN >= 10), other=1.0).to(dt)
        c = tl.load(x_ptr + 2 * n + i, mask=ok & (FN >= 20), other=1.0).to(dt)
        if FN == 0:
            tl.store(out_ptr + i, M.fast_exp(a, F64), mask=ok)
        elif FN == 1:
            tl.store(out_ptr + i, M.fast_log(a, F64), mask=ok)
        elif FN == 2:
            tl.store(out_ptr + i, M.log1p_unit(a, F64), mask=ok)
        elif FN == 3:
            s, co = M.sincos_turns(a)
            tl.store(out_ptr + i, s, mask=ok)
            tl.store(out_ptr + n + i, co, mask=ok)
        elif FN < 20:  # 10 + P: std_terms(scale, shift)
            std, log_std, dstd, dlog_std = M.std_terms(a, b, FN - 10, F64)
            tl.store(out_ptr + i, std, mask=ok)
            tl.store(out_ptr + n + i, log_std, mask=ok)
            tl.store(out_ptr + 2 * n + i, dstd, mask=ok)
            tl.store(out_ptr + 3 * n + i, dlog_std, mask=ok)
        elif FN == 20:
            tl.store(out_ptr + i, M.kl_element(a, b, c), mask=ok)
        else:
            tl.store(out_ptr + i, M.kl_element_dscale(a, b, c), mask=ok)

    @triton.jit
    def _word_kernel(x_ptr, out_ptr, fout_ptr, n, seed, offset, keep_prob, inv_keep, FN: tl.constexpr,
                     BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        ok = i < n
        a = tl.load(x_ptr + i, mask=ok, other=0)
        if FN == 0:
            tl.store(fout_ptr + i, M.pow2i(a.to(tl.int32)), mask=ok)
        elif FN == 1:
            tl.store(fout_ptr + i, M.uniform_from_bits(a.to(tl.uint32)), mask=ok)
        elif FN == 2:
            b = tl.load(x_ptr + n + i, mask=ok, other=0)
            na, nb = M.box_muller(a.to(tl.uint32), b.to(tl.uint32))
            tl.store(fout_ptr + i, na, mask=ok)
            tl.store(fout_ptr + n + i, nb, mask=ok)
        elif FN == 3:
            r0, r1, r2, r3 = M.philox_block(a, seed, offset)
            tl.store(out_ptr + i, r0.to(tl.int64), mask=ok)
            tl.store(out_ptr + n + i, r1.to(tl.int64), mask=ok)
            tl.store(out_ptr + 2 * n + i, r2.to(tl.int64), mask=ok)
            tl.store(out_ptr + 3 * n + i, r3.to(tl.int64), mask=ok)
        elif FN == 4:
            n0, n1, n2, n3 = M.normal_block(a, seed, offset)
            tl.store(fout_ptr + i, n0, mask=ok)
            tl.store(fout_ptr + n + i, n1, mask=ok)
            tl.store(fout_ptr + 2 * n + i, n2, mask=ok)
            tl.store(fout_ptr + 3 * n + i, n3, mask=ok)
        else:
            tl.store(fout_ptr + i, M.dropout_scale_at(a, seed, offset, keep_prob, inv_keep), mask=ok)


FLOAT_FN = {"fast_exp": (0, 1), "fast_log": (1, 1), "log1p_unit": (2, 1), "sincos_turns": (3, 2),
            "std_terms_softplus": (10, 4), "std_terms_logvar": (11, 4), "std_terms_std": (12, 4),
            "kl_element": (20, 1), "kl_element_dscale": (21, 1)}
WORD_FN = {"pow2i": (0, 1), "uniform_from_bits": (1, 1), "box_muller": (2, 2), "philox_block": (3, 4),
           "normal_block": (4, 4), "dropout_scale_at": (5, 1)}


def triton_eval(name, x, keep_prob=0.0, inv_keep=0.0):
    """[outputs, n] from mibcore/kernels/_math.py's function of that name (one program)."""
    if not HAS_TRITON:
        pytest.skip("triton not installed")
    x = torch.stack(list(x)) if isinstance(x, (list, tuple)) else x.reshape(1, -1)
    x = x.contiguous()
    n = x.shape[1]
    block = triton.next_power_of_2(n)
    if name in WORD_FN:
        fn, outs = WORD_FN[name]
        out = torch.zeros(outs, n, dtype=torch.int64)
        fout = torch.zeros(outs, n, dtype=torch.float32)
        _word_kernel[(1,)](x, out, fout, n, SEED, OFFSET, keep_prob, inv_keep, FN=fn, BLOCK=block)
        return (out if name == "philox_block" else fout).numpy()
    fn, outs = FLOAT_FN[name]
    out = torch.zeros(outs, n, dtype=x.dtype)
    _float_kernel[(1,)](x, out, n, 0, 0, FN=fn, F64=x.dtype == torch.float64, BLOCK=block)
    return out.numpy()


# ---------------------------------------------------------------- inputs and oracles per function
def _std_oracle(p, scale, shift):
    x = (scale + F32(shift)).astype(np.float64)  # the kernels add the shift in float32
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if p == "softplus":
            sp = np.where(x > 20, x, np.log1p(np.exp(x)))
            sp = np.where(np.isnan(x), x, sp)
            log_sp = np.where(x < -20, x, np.log(sp))
            sig = 1 / (1 + np.exp(-x))
            dlog = np.where(x < -20, 1.0, sig / sp)
            return [sp, log_sp, sig, dlog]
        if p == "logvar":
            s = np.exp(0.5 * scale.astype(np.float64))
            s32 = s.astype(F32).astype(np.float64)  # d std = std / 2 of the float32 std (inf where it overflows)
            return [s, 0.5 * scale.astype(np.float64), 0.5 * s32, np.full_like(s, 0.5)]
        s = scale.astype(np.float64)
        return [s, np.log(s), np.ones_like(s), 1 / s]


def _kl_inputs():
    g = np.random.default_rng(0)
    mu = np.concatenate([[0, 0, 1, -1, 1e-20, 3e18], g.normal(size=250) * 3]).astype(F32)
    std = np.concatenate([[1, MIN_NORMAL, 1, 2, 1e-20, 1], np.exp(g.normal(size=250) * 2)]).astype(F32)
    return [torch.from_numpy(mu), torch.from_numpy(std), torch.from_numpy(np.log(std).astype(F32))]


def _f64(t):
    return t.numpy().astype(np.float64)


# {case: (inputs, float64 oracle, scales)}: scales(inputs) gives, per output, the magnitude of the
# terms it is computed from (None: the result's own), for the ulp bounds of _assert_close.
def _cases():
    with np.errstate(all="ignore"):
        out = {
            "fast_exp": ([GRID], lambda x: [np.exp(x[0].astype(np.float64))], None),
            "fast_log": ([GRID], lambda x: [np.log(x[0].astype(np.float64))], None),
            "log1p_unit": ([UNIT], lambda x: [np.log1p(x[0].astype(np.float64))], None),
            "sincos_turns": ([TURNS], lambda x: [np.sin(2 * np.pi * x[0].astype(np.float64)),
                                                 np.cos(2 * np.pi * x[0].astype(np.float64))], lambda x: [1.0, 1.0]),
        }
    kl = _kl_inputs()
    out["kl_element"] = (kl, lambda x: [0.5 * (x[0].astype(np.float64) ** 2 + x[1].astype(np.float64) ** 2
                                               - 2 * x[2].astype(np.float64) - 1)],
                         lambda x: [0.5 * (_f64(x[0]) ** 2 + _f64(x[1]) ** 2 + 2 * np.abs(_f64(x[2])) + 1)])
    dsc = [kl[1], kl[0].abs() + 0.1, kl[0]]
    out["kl_element_dscale"] = (dsc, lambda x: [x[0].astype(np.float64) * x[1] - x[2].astype(np.float64)],
                                lambda x: [np.abs(_f64(x[0]) * _f64(x[1])) + np.abs(_f64(x[2]))])
    for p, shift in (("softplus", -5.0), ("softplus", 0.0), ("logvar", 0.0), ("std", 0.0)):
        scale = GRID if p != "logvar" else GRID[GRID.abs() < 1e4]
        key = f"std_terms_{p}" + ("" if shift == 0.0 else f"_shift{shift:g}")
        # log std = log(softplus) cancels near std = 1: its error is relative to 1
        scales = (lambda x: [None, 1.0, None, None]) if p == "softplus" else None
        out[key] = ([scale, torch.full_like(scale, shift)], lambda x, p=p, shift=shift: _std_oracle(p, x[0], shift),
                    scales)
    return out


CASES = _cases()


def _probe_name(case):
    return case.split("_shift")[0]


def _kind(case):
    return "std_terms" if case.startswith("std_terms") else _probe_name(case)
