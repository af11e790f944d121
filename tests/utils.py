"""What every operator's tests share: the backends they run, dtypes and tolerances.

The backends a test runs are those that serve the operator on this machine; the conftest fails
the run when a backend named in MIBCORE_REQUIRE_BACKENDS (set by .ci/run) is missing, so the
suite never quietly shrinks to the reference backend.
"""
import os

import torch

import mibcore

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

TOLERANCES = {  # (rtol, atol) against a float64 oracle
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 1e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),  # 2 ulp: the Triton interpreter truncates bf16
}


def required_backends():
    """The backends this run must have (MIBCORE_REQUIRE_BACKENDS, comma-separated)."""
    return [b.strip() for b in os.environ.get("MIBCORE_REQUIRE_BACKENDS", "").split(",") if b.strip()]


def backends(op, device="cpu", *, fused=False):
    """Backends that serve operator `op` on `device` here (without the reference if `fused`)."""
    names = [
        name for name, backend in mibcore.backends.BACKENDS.items()
        if backend.serves(op, torch.device(device).type)
    ]
    return [n for n in names if n != "reference"] if fused else names


def assert_close(actual, expected, dtype, scale=1.0):
    """actual == expected within `dtype`'s tolerance (times `scale`), compared in float64."""
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol * scale, atol=atol * scale)
