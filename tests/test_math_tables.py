"""The constants of the shared math have one source, mibcore/_math_tables.py: the generated header
follows it, the built extension and the Triton code use it, and no csrc/ or mibcore/kernels/ file
types one of its values again."""
import glob
import importlib.util
import math
import os
import re

import numpy as np
import pytest
import torch

from mibcore import _extension, _math_tables
from tests.math_probe import F32, HAS_TRITON, ROOT, cpp


# ---------------------------------------------------------------- the table is the one source
def _load_tables():
    spec = importlib.util.spec_from_file_location("_tables_copy", _math_tables.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_header_follows_the_table_and_a_changed_coefficient_changes_it():
    tables = _load_tables()
    text = tables.header_text()
    for name, value in tables.flat(tables.FLOAT_NAMES).items():
        literal = re.search(rf"constexpr float {tables.cpp_name(name)} = (\S+)f;", text)
        assert literal, name
        assert float.fromhex(literal.group(1)) == _math_tables.float32(value), name
    # One coefficient one ulp away gives a header that differs in that line only.
    exp_p = list(tables.EXP_P)
    exp_p[3] = float(np.nextafter(F32(exp_p[3]), F32(1)))
    tables.EXP_P = tuple(exp_p)
    changed = [(a, b) for a, b in zip(text.splitlines(), tables.header_text().splitlines()) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("constexpr float kExpP3 "), changed


def test_built_extension_uses_the_current_table():
    # A stale build (table edited, extension not rebuilt) gives other numbers than the table's.
    if not _extension.available():
        pytest.skip("mibcore._C is not built")
    u = cpp("uniform_from_bits", [torch.tensor([0])])[0, 0]
    assert u == _math_tables.float32(_math_tables.UNIFORM_SCALE)
    assert cpp("fast_exp", torch.tensor([1.0]))[0, 0] == np.float32(math.e)  # within 1 ulp: exact here


_NUMBER = re.compile(  # a C++ or Python number literal: hex floats, decimals, exponents, an f suffix
    r"(?<![\w.])(0[xX][0-9a-fA-F.]+[pP][-+]?\d+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)[fF]?(?![\w.])")


def test_no_table_value_is_typed_again_in_csrc_or_kernels():
    """Every literal in csrc/ and mibcore/kernels/ whose float32 value is one of the table's non-trivial
    constants (not a small integer, a power of two below 2^8 or a simple fraction) is a copy
    that the generator does not control."""
    trivial = lambda v: v == int(v) and abs(v) <= 64 or abs(v) in (0.5, 0.25)  # noqa: E731
    table = {_math_tables.float32(v): n for n, v in _math_tables.flat(_math_tables.FLOAT_NAMES).items()
             if not trivial(_math_tables.float32(v))}
    table.update({_math_tables.float32(-v): n for v, n in list(table.items())})
    ints = {v: n for n, v in _math_tables.flat(_math_tables.UINT32_NAMES).items()}
    # (csrc/tests/ is left out: its expected values are an oracle, e.g. uniform_from_bits(0) == 2^-24.)
    files = [f for ext in ("h", "cpp", "cu", "cuh") for f in glob.glob(os.path.join(ROOT, "csrc", "**", f"*.{ext}"),
                                                                        recursive=True)
             if os.sep + "tests" + os.sep not in f]
    files += glob.glob(os.path.join(ROOT, "mibcore", "kernels", "*.py"))
    copies = []
    for path in files:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                code = line.split("//")[0] if not path.endswith(".py") else line.split("#")[0]
                for m in re.finditer(r"0[xX][0-9a-fA-F]{8}\b", code):
                    if int(m.group(0), 16) in ints:
                        copies.append(f"{os.path.relpath(path, ROOT)}:{number}: {ints[int(m.group(0), 16)]}")
                for m in _NUMBER.finditer(code):
                    text = m.group(1)
                    value = float.fromhex(text) if text[:2].lower() == "0x" else float(text)
                    if value and _math_tables.float32(value) in table:
                        copies.append(f"{os.path.relpath(path, ROOT)}:{number}: {text} "
                                      f"({table[_math_tables.float32(value)]})")
                for m in re.finditer(r"1\.0f?\s*/\s*(\d+)\.0f?", code):  # log1p_unit's 1/15 .. 1/3
                    if _math_tables.float32(1.0 / int(m.group(1))) in table:
                        copies.append(f"{os.path.relpath(path, ROOT)}:{number}: {m.group(0)}")
    assert not copies, "constants of mibcore/_math_tables.py typed again:\n" + "\n".join(copies)


def test_triton_constants_are_the_tables():
    if not HAS_TRITON:
        pytest.skip("triton not installed")
    from mibcore.kernels import _math as M

    # (the table's value, or its float32 where Triton would otherwise type it float64: MIN_NORMAL)
    for name, value in _math_tables.flat(_math_tables.FLOAT_NAMES).items():
        assert getattr(M, name).value in (value, _math_tables.float32(value)), name
