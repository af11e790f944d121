"""Backend selection: which implementation of a fused operator runs.

Backends:
    reference  pure PyTorch (the paper's formulas), CPU and CUDA tensors; the oracle of the tests
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
from typing import Callable

import torch

from mibcore import _extension
from mibcore.ops import AUTO_ORDERS, OPERATORS

NAMES = ("reference", "cpu", "triton", "cuda", "auto")

# Preference order of `auto`, fastest first, per device type (an operator's AUTO_ORDER overrides it).
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


def auto_order(op, device_type):
    """The backends `auto` tries for `op` on `device_type`, in order."""
    return AUTO_ORDERS.get(op, {}).get(device_type) or _AUTO_ORDER.get(device_type, ("reference",))


@functools.lru_cache(maxsize=None)
def _triton_installed():
    # Cached: resolve() runs on every functional call and find_spec walks sys.path.
    return importlib.util.find_spec("triton") is not None


def _device_present(device_type):
    return device_type == "cpu" or (device_type == "cuda" and torch.cuda.is_available())


class BackendError(ValueError):
    """A backend was asked for that does not exist or cannot serve the given tensors."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """A backend: what it needs to run on this machine (`ready`). Which operators it implements
    and on which devices comes from the operator modules' IMPLEMENTATIONS (mibcore.ops)."""

    name: str
    description: str
    ready: Callable[[], bool]

    @property
    def ops(self):
        """Names of the operators it implements (the reference implements every one)."""
        if self.name == "reference":
            return frozenset(OPERATORS)
        return frozenset(op for op, implementations in OPERATORS.items() if self.name in implementations)

    def serves(self, op, device_type):
        """Whether it can run operator `op` on `device_type` tensors on this machine now."""
        if not (self.ready() and _device_present(device_type)):
            return False
        return self.name == "reference" or (
            self.name in OPERATORS[op] and device_type in OPERATORS[op][self.name].devices
        )

    def devices(self):
        """Device types it serves (for at least one operator) on this machine right now."""
        return tuple(d for d in ("cpu", "cuda") if any(self.serves(op, d) for op in OPERATORS))


BACKENDS = {
    "reference": Backend("reference", "pure PyTorch, the paper's formulas; the test oracle", lambda: True),
    "cpu": Backend("cpu", "C++ extension mibcore._C (OpenMP + SIMD)", _extension.available),
    "triton": Backend("triton", "Triton kernels (GPU; CPU through TRITON_INTERPRET=1)", _triton_installed),
    "cuda": Backend("cuda", "CUDA C++ extension mibcore._C", _extension.has_cuda_kernels),
}


def implementation(op, backend):
    """The torch operator that fused backend `backend` runs for `op`."""
    return OPERATORS[op][backend].operator()


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
        for name in auto_order(op, device_type):
            if BACKENDS[name].serves(op, device_type):
                return name
        raise BackendError(f"no backend implements {op} for {device_type} tensors")
    backend = BACKENDS[choice]
    if op not in backend.ops:
        implementers = [n for n, b in BACKENDS.items() if op in b.ops]
        raise BackendError(
            f"backend {choice!r} does not implement {op}; it is implemented by: "
            f"{', '.join(implementers)} (select one of those or 'auto')"
        )
    if not backend.serves(op, device_type):
        served = [d for d in ("cpu", "cuda") if backend.serves(op, d)]
        why = f"it serves {', '.join(served)} tensors" if served else "it is not available on this machine"
        raise BackendError(
            f"backend {choice!r} cannot run {op} on {device_type} tensors: {why}. "
            f"Backends serving {device_type}: {', '.join(available(device_type)) or 'none'}"
        )
    return choice
