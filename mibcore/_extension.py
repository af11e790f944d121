"""Loads the compiled extension mibcore._C once, degrading to the reference backend.

A missing or broken extension is not an import error: mibcore still works through the
pure-PyTorch `reference` backend, and one warning says why the fused CPU/CUDA backends
are off.
"""
import functools
import os
import warnings

import torch  # noqa: F401  (libtorch must be loaded before the extension)


@functools.lru_cache(maxsize=None)
def load():
    """Returns the build-info dict of mibcore._C, or None when it cannot be loaded (or is
    hidden with MIBCORE_DISABLE_EXTENSION=1, which tests use to check what happens without it)."""
    if os.environ.get("MIBCORE_DISABLE_EXTENSION") == "1":
        warnings.warn("mibcore: the C++ extension is disabled by MIBCORE_DISABLE_EXTENSION=1; only the "
                      "'reference' (and, with a GPU, 'triton') backends are available.", RuntimeWarning, stacklevel=2)
        return None
    try:
        from mibcore import _C  # noqa: F401  (registers the torch.ops.mibcore operators)
    except ImportError as error:
        warnings.warn(
            f"mibcore: the C++ extension mibcore._C could not be loaded ({error}); only the "
            "'reference' (and, with a GPU, 'triton') backends are available. Rebuild with "
            "`pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    from mibcore import cpu_isa

    cpu_isa.apply_environment()
    info = {}
    for item in torch.ops.mibcore.build_info().split(";"):
        key, _, value = item.partition("=")
        info[key] = value
    return info


def available():
    return load() is not None


def has_cuda_kernels():
    info = load()
    return info is not None and info.get("cuda") == "1"
