"""The instruction-set level of the `cpu` backend's kernels.

The extension holds every CPU kernel compiled for three levels, `baseline` (any x86-64; the
only level on other architectures), `avx2` (AVX2 + FMA + F16C + BMI2) and `avx512`
(AVX-512 F/BW/VL/DQ), and runs the highest one this CPU supports. `MIBCORE_CPU_ISA=avx2`
(read at import) or `set("avx2")` / `with use("avx2"):` choose a lower one, for comparison or
debugging; a level above what the CPU supports is a ValueError (it would stop on an illegal
instruction). The level is process-wide, not per thread.
"""
import contextlib
import os

import torch

from mibcore import _extension

LEVELS = ("baseline", "avx2", "avx512")


def _info():
    if not _extension.available():
        raise RuntimeError("mibcore._C is not built: there are no CPU kernels (see `python -m mibcore info`)")
    return dict(item.split("=", 1) for item in torch.ops.mibcore.cpu_isa().split(";"))


def current():
    """The level the CPU kernels use now."""
    return _info()["active"]


def supported():
    """The highest level this CPU and OS support (and the default)."""
    return _info()["supported"]


def available():
    """The levels that can run here: those compiled in, up to supported()."""
    info = _info()
    compiled = info["compiled"].split(",")
    return [level for level in LEVELS[: LEVELS.index(info["supported"]) + 1] if level in compiled]


def set(level):  # noqa: A001  (mirrors mibcore.backends.set)
    """Makes every CPU kernel use `level` (one of LEVELS, at most supported())."""
    if level not in LEVELS:
        raise ValueError(f"CPU instruction-set level must be one of {', '.join(LEVELS)}, got {level!r}")
    _info()
    torch.ops.mibcore.set_cpu_isa(level)


@contextlib.contextmanager
def use(level):
    """set(level) inside a `with` block, restoring the previous level after it."""
    previous = current()
    set(level)
    try:
        yield
    finally:
        set(previous)


def apply_environment():
    """Applies MIBCORE_CPU_ISA, once the extension is loaded (called by mibcore._extension)."""
    level = os.environ.get("MIBCORE_CPU_ISA", "").strip().lower()
    if level:
        try:
            torch.ops.mibcore.set_cpu_isa(level)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"MIBCORE_CPU_ISA: {error}") from None
