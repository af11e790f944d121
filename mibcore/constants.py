"""Constants that Python, C++ and Triton share: the one Python source of each.

C++ keeps its own copies next to the code that uses them (csrc/include/mibcore/math.h: the
parameterization codes; csrc/include/mibcore/host.h: the accumulation-dtype rule) and exposes
them as `torch.ops.mibcore.constants()`; tests/test_constants.py compares those with this table.
The softplus threshold, like every constant of the per-element math, comes from
mibcore/_math_tables.py, from which the build generates C++'s copy. The Triton kernels (mibcore/kernels/)
and the reference import them from here.
"""
import torch

from mibcore._math_tables import SOFTPLUS_THRESHOLD  # noqa: F401  (re-exported)

# std from the scale head; an operator receives the index of the name (softplus = 0, ...).
PARAMETERIZATIONS = ("softplus", "logvar", "std")
PARAMETERIZATION_IDS = {name: code for code, name in enumerate(PARAMETERIZATIONS)}

# The KL reductions (applied in Python for every backend: the operators return per-row KLs).
REDUCTIONS = ("none", "sum", "mean", "batchmean")

# SOFTPLUS_THRESHOLD (imported above): softplus(x) = x above it (torch.nn.functional.softplus's
# default threshold); below its negative, softplus(x) = e^x to working precision.


def accumulation_dtype(dtype):
    """The dtype every operator computes and accumulates in for inputs of `dtype`:
    float64 stays float64, every other floating dtype uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
