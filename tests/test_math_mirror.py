"""The per-element math mirrored across languages, function by function.

Every function of csrc/include/mibcore/math.h and philox.h that mibcore/kernels/_math.py mirrors is
evaluated on a grid of special values (0, -0, subnormals, the smallest normal, +-1, thresholds
of exp's overflow and underflow and of softplus, large values, +-inf, NaN) through
- C++ scalar (the MIB_HD function) at every instruction-set level this CPU runs,
- C++ vector (cpu::Simd: reparameterize_kl_simd.h, philox_cpu.h) at the AVX2 and AVX-512 levels,
- Triton (mibcore/kernels/_math.py) through the interpreter on CPU-only machines,
via the test-only op torch.ops.mibcore.math_probe (csrc/cpu/math_probe_cpu.cpp), and compared:
- C++ scalar at the baseline level and Triton bit for bit (the same float32 operations in the same
  order, no fused multiply-adds on either side);
- the other levels (g++ contracts a * b + c into FMAs there) and the vector code within MIRROR_ULPS;
- each against a float64 oracle within ORACLE_ULPS (absolute where the result is near 0),
so that a slip in one coefficient of one implementation fails the test named after its function.
The bit-word functions (Philox, uniforms, Box-Muller) are tests/test_math_words.py's; the one source
of the constants, mibcore/_math_tables.py, is checked by tests/test_math_tables.py.
"""
import math

import numpy as np
import pytest
import torch

from mibcore import _extension
from tests.math_probe import (
    CASES, GRID, INF, NAN, MIRROR_ULPS, ORACLE_ULPS, TINY, UNIT, _assert_bits, _assert_close, _kind, _levels,
    _probe_name, cpp, needs_extension, triton_eval
)


# ---------------------------------------------------------------- float functions
@needs_extension
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpp_scalar_matches_float64_oracle(case):
    inputs, oracle, scales = CASES[case]
    got = cpp(_probe_name(case), inputs)
    want = oracle([t.numpy() for t in inputs])
    terms = scales(inputs) if scales else [None] * len(want)
    for k, w in enumerate(want):
        _assert_close(got[k], w, ORACLE_ULPS[_kind(case)], f"{case} output {k} vs float64", inputs[0].numpy(),
                      terms[k])


@needs_extension
@pytest.mark.parametrize("case", sorted(CASES))
def test_triton_equals_cpp_scalar_bit_for_bit(case):
    inputs = CASES[case][0]
    _assert_bits(triton_eval(_probe_name(case), inputs), cpp(_probe_name(case), inputs), f"{case}: Triton vs C++",
                 inputs[0].numpy())


@needs_extension
@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpp_at_each_level_matches_baseline(case, level):
    if level not in _levels():
        pytest.skip(f"this CPU does not run the {level} level")
    inputs, _, scales = CASES[case]
    base = cpp(_probe_name(case), inputs)
    terms = scales(inputs) if scales else [None] * len(base)
    impls = ["scalar"] + ([] if case == "sincos_turns" else ["vector"])  # sincos: inside box_muller_ps
    for impl in impls:
        got = cpp(_probe_name(case), inputs, impl, level)
        for k in range(len(base)):
            _assert_close(got[k], base[k], MIRROR_ULPS[_kind(case)],
                          f"{case} output {k}: C++ {impl} at {level} vs baseline scalar", inputs[0].numpy(), terms[k])


@needs_extension
@pytest.mark.parametrize("name", ["fast_exp", "fast_log", "log1p_unit", "std_terms_softplus", "std_terms_std"])
def test_float64_versions_are_the_c_library(name):
    x = GRID.double() if name != "log1p_unit" else UNIT.double()
    inputs = [x, torch.full_like(x, -5.0 if "softplus" in name else 0.0)] if name.startswith("std") else [x]
    got = cpp(name, inputs)
    _assert_bits(triton_eval(name, inputs), got, f"{name} float64: Triton vs C++")
    if name == "fast_exp":
        _assert_bits(got[0], np.exp(x.numpy()), "fast_exp float64 vs numpy")


def test_special_values_of_exp_and_log():
    if not _extension.available():
        pytest.skip("mibcore._C is not built")
    x = torch.tensor([INF, -INF, NAN, 0.0, -0.0, -1.0, 200.0, -200.0, TINY])
    e = cpp("fast_exp", x)[0]
    assert e[0] == INF and e[1] == 0 and np.isnan(e[2]) and e[3] == 1 and e[4] == 1 and e[6] == INF and e[7] == 0
    lg = cpp("fast_log", x)[0]
    assert lg[0] == INF and np.isnan(lg[1]) and np.isnan(lg[2]) and lg[3] == -INF and lg[4] == -INF
    assert np.isnan(lg[5]) and abs(lg[8] - math.log(TINY)) < 1e-5 * abs(math.log(TINY))
