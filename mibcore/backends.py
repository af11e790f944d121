"""Backend selection: which implementation of a fused operator runs.

Backends:
    reference  pure PyTorch (the paper's formulas), any device; the oracle of the tests
    cpu        C++ extension (OpenMP + SIMD), CPU tensors
    triton     Triton kernels, CUDA tensors (and CPU tensors under TRITON_INTERPRET=1)
    cuda       CUDA C++ extension, CUDA tensors
    auto       the fastest backend that implements the operator for the tensors' device

The choice is made in the functional API before autograd records the operator. The
selection comes from, in order: `use(name)` (a context manager), `set(name)`, the
environment variable MIBCORE_BACKEND, and finally "auto". Asking for a backend that
cannot serve the tensors is a BackendError, never a silent fallback.
"""
import contextlib
import dataclasses
import functools
import importlib.util
import os
import threading

import torch

from mibcore import _extension

NAMES = ("reference", "cpu", "triton", "cuda", "auto")

# Preference order of `auto`, fastest first, per device type.
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


@functools.lru_cache(maxsize=None)
def _triton_installed():
    # Cached: resolve() runs on every functional call and find_spec walks sys.path.
    return importlib.util.find_spec("triton") is not None


class BackendError(ValueError):
    """A backend was asked for that does not exist or cannot serve the given tensors."""


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    ops: frozenset  # operator names it implements
    description: str

    def devices(self):
        """Device types this backend serves on this machine right now."""
        if self.name == "reference":
            return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        if self.name == "cpu":
            return ("cpu",) if _extension.available() else ()
        if self.name == "cuda":
            ok = _extension.has_cuda_kernels() and torch.cuda.is_available()
            return ("cuda",) if ok else ()
        if self.name == "triton":
            if not _triton_installed():
                return ()
            if os.environ.get("TRITON_INTERPRET") == "1":
                return ("cpu",)
            return ("cuda",) if torch.cuda.is_available() else ()
        return ()


_FUSED = frozenset({"reparameterize_kl"})
_ALL = _FUSED | {"tensor_fusion", "low_rank_fusion"}

BACKENDS = {
    "reference": Backend("reference", _ALL, "pure PyTorch, the paper's formulas; the test oracle"),
    "cpu": Backend("cpu", _ALL, "C++ extension mibcore._C (OpenMP + SIMD)"),
    "triton": Backend("triton", _ALL, "Triton kernels (GPU; CPU through TRITON_INTERPRET=1)"),
    "cuda": Backend("cuda", _FUSED | {"tensor_fusion"}, "CUDA C++ extension mibcore._C"),
}

_state = threading.local()
_global_choice = None


def _check_name(name):
    if name not in NAMES:
        raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")
    return name


def set(name):  # noqa: A001  (the public name is fixed by the API contract)
    """Selects the backend for the whole process (until changed); `None` clears it."""
    global _global_choice
    _global_choice = None if name is None else _check_name(name)


@contextlib.contextmanager
def use(name):
    """Selects the backend inside a `with` block (per thread)."""
    _check_name(name)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def current():
    """The selected backend name (possibly 'auto')."""
    stack = getattr(_state, "stack", None)
    if stack:
        return stack[-1]
    if _global_choice is not None:
        return _global_choice
    env = os.environ.get("MIBCORE_BACKEND")
    if env:
        try:
            return _check_name(env.strip().lower())
        except BackendError as error:
            raise BackendError(f"MIBCORE_BACKEND: {error}") from None
    return "auto"


def available(device=None):
    """Names of the backends that serve `device` (a device or type; all devices if None)."""
    device_type = None if device is None else torch.device(device).type
    names = []
    for name, backend in BACKENDS.items():
        served = backend.devices()
        if served and (device_type is None or device_type in served):
            names.append(name)
    return names


def resolve(op, device):
    """The concrete backend that runs operator `op` on `device` under the current selection."""
    device_type = torch.device(device).type
    choice = current()
    if choice == "auto":
        for name in _AUTO_ORDER.get(device_type, ("reference",)):
            backend = BACKENDS[name]
            if op in backend.ops and device_type in backend.devices():
                return name
        raise BackendError(f"no backend implements {op} for {device_type} tensors")
    backend = BACKENDS[choice]
    if op not in backend.ops:
        implementers = [n for n, b in BACKENDS.items() if op in b.ops]
        raise BackendError(
            f"backend {choice!r} does not implement {op}; it is implemented by: "
            f"{', '.join(implementers)} (select one of those or 'auto')"
        )
    if device_type not in backend.devices():
        served = backend.devices()
        why = f"it serves {', '.join(served)} tensors" if served else "it is not available on this machine"
        raise BackendError(
            f"backend {choice!r} cannot run {op} on {device_type} tensors: {why}. "
            f"Backends serving {device_type}: {', '.join(available(device_type)) or 'none'}"
        )
    return choice
