"""The numeric constants of mibcore's per-element math: the one source for C++, CUDA and Triton.

The float32 math of csrc/include/mibcore (math.h, philox.h), of the explicit SIMD code of csrc/cpu
(reparameterize_kl_simd.h, simd_cpu.h, philox_cpu.h) and of the Triton kernels (mibcore/kernels/_math.py)
uses the constants below and nothing hand-typed:

- C++: the build generates the header `mibcore/math_tables.h` from this file (setup.py's build_ext
  before it compiles, CMakeLists.txt through a custom command, .ci/aarch64_check.sh and
  tests/test_cuda_build.py into their scratch folders) by running it as a script:
  `python mibcore/_math_tables.py OUT_DIR` writes OUT_DIR/mibcore/math_tables.h. The header is a
  build product, never committed. Each value becomes a `constexpr` of its C++ type; a float is
  written as the hexadecimal literal of the float32 nearest to the Python value (the rounding Triton
  applies to a Python float constant that meets a float32 tensor), so C++ and Triton use the same
  bits. A tuple NAME becomes kName0, kName1, ... (C++) and NAME0, NAME1, ... (Triton).
- Triton: mibcore/kernels/_math.py imports this module and makes each value a `tl.constexpr`.

Standard library only (CMake runs it with whatever Python 3 it finds; no torch, no numpy), and no
import of the mibcore package when run as a script. Polynomials are in Horner order, the highest
degree first, with their signs (p = p * x + c for every c).
"""
import os
import struct
import sys

# ---------------------------------------------------------------- fast_exp (Cephes expf)
# exp(x) = 2^n exp(r), n = floor(x log2(e) + 1/2), r = x - n ln2 with ln2 in two parts (LN2_HI
# exact in 9 bits, so n LN2_HI is exact), then exp(r) = 1 + r + r^2 P(r).
EXP_MAX_ARG = 88.72283935546875  # above this exp overflows (+inf)
EXP_MIN_ARG = -103.97208404541015  # below this exp is 0
LOG2E = 1.44269504088896341
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4
EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)

# ---------------------------------------------------------------- fast_log (Cephes logf)
# x = m 2^e with m in [sqrt(1/2), sqrt(2)), subnormals scaled up by 2^23 first; with f = m - 1,
# log(x) = f - f^2 / 2 + f^3 P(f) + e ln2 (ln2 in the two parts of fast_exp).
MIN_NORMAL = 1.17549435e-38  # the smallest normal float, 2^-126
SUBNORMAL_SCALE = 8388608.0  # 2^23
SQRT_HALF = 0.707106781186547524
LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
         -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)

# ---------------------------------------------------------------- log1p_unit
# log(1 + t) = 2 atanh(s), s = t / (2 + t): 2 s + 2 s^3 P(s^2), P the odd series' 1/15, ..., 1/3.
LOG1P_UNIT_P = tuple(1.0 / k for k in (15, 13, 11, 9, 7, 5, 3))

# ---------------------------------------------------------------- softplus
# softplus(x) = x above this (torch.nn.functional.softplus's default threshold); below its
# negative, softplus(x) = e^x to working precision, so log softplus(x) = x.
SOFTPLUS_THRESHOLD = 20.0

# ---------------------------------------------------------------- uniforms and Box-Muller
UNIFORM_SCALE = 5.9604644775390625e-08  # 2^-24: uniform(r) = ((r >> 8) + 1) 2^-24, in (0, 1]
TWO_PI = 6.28318530717958648
# Cephes sinf / cosf on [-pi/4, pi/4]: sin x = x + x z S(z), cos x = 1 - z / 2 + z^2 C(z), z = x^2.
SIN_P = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
COS_P = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)

# ---------------------------------------------------------------- Philox4x32-10
# (Salmon et al. 2011: the Random123 and curand constants; Triton's tl.philox has them built in.)
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85

# The names this module exports to C++ and Triton, in header order, with their C++ type.
FLOAT_NAMES = ("EXP_MAX_ARG", "EXP_MIN_ARG", "LOG2E", "LN2_HI", "LN2_LO", "EXP_P", "MIN_NORMAL", "SUBNORMAL_SCALE",
               "SQRT_HALF", "LOG_P", "LOG1P_UNIT_P", "SOFTPLUS_THRESHOLD", "UNIFORM_SCALE", "TWO_PI", "SIN_P",
               "COS_P")
UINT32_NAMES = ("PHILOX_M0", "PHILOX_M1", "PHILOX_W0", "PHILOX_W1")
HEADER = "mibcore/math_tables.h"


def float32(value):
    """The float32 nearest to `value` (round to nearest even), as a Python float."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def flat(names=FLOAT_NAMES + UINT32_NAMES):
    """{NAME: value} with each tuple NAME expanded to NAME0, NAME1, ... (the Triton names)."""
    out = {}
    for name in names:
        value = globals()[name]
        if isinstance(value, tuple):
            out.update({f"{name}{i}": v for i, v in enumerate(value)})
        else:
            out[name] = value
    return out


def cpp_name(name):
    """EXP_P0 -> kExpP0, LOG2E -> kLog2e, MIN_NORMAL -> kMinNormal."""
    return "k" + "".join(part[:1].upper() + part[1:].lower() for part in name.split("_"))


def float_literal(value):
    """The exact C++ literal of float32(value): hexadecimal, with the f suffix."""
    mantissa, _, exponent = float.hex(float32(value)).partition("p")
    return f"{mantissa.rstrip('0').rstrip('.')}p{exponent}f"


def header_text():
    lines = [
        "// Generated by mibcore/_math_tables.py (the one source of these values): do not edit, do not commit.",
        "// Each float is the exact float32 of the table's value (hexadecimal literal; the decimal in the comment).",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace mibcore {",
    ]
    for name, value in flat(FLOAT_NAMES).items():
        lines.append(f"constexpr float {cpp_name(name)} = {float_literal(value)};  // {value!r}")
    for name, value in flat(UINT32_NAMES).items():
        lines.append(f"constexpr uint32_t {cpp_name(name)} = 0x{value:08X}u;")
    lines += ["}  // namespace mibcore", ""]
    return "\n".join(lines)


def write_header(out_dir):
    """Writes OUT_DIR/mibcore/math_tables.h, only when its text changes (so that an unchanged table
    triggers no rebuild); returns the path."""
    path = os.path.join(out_dir, HEADER)
    text = header_text()
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # atomic: parallel builds never read half a header
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python mibcore/_math_tables.py OUT_DIR  (writes OUT_DIR/mibcore/math_tables.h)")
    print(write_header(sys.argv[1]))
