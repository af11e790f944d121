"""Backend selection: which implementation of a fused operator runs.

Backends:
    reference  pure PyTorch (the paper's formulas), CPU and CUDA tensors; the oracle of the tests
    cpu        C++ extension (OpenMP + SIMD), CPU tensors
    triton     Triton kernels, CUDA tensors (and CPU tensors under TRITON_INTERPRET=1)
    cuda       CUDA C++ extension, CUDA tensors
    auto       the fastest backend that implements the operator for the tensors' device

The choice is made in the functional API before autograd records the operator. The
selection comes from, in order: `use(name)` (a context manager), `set(name)`, the
environment variable MIBCORE_BACKEND (read once, at the first call), and finally "auto".
Asking for a backend that cannot serve the tensors is a BackendError, never a silent fallback.
Which backend implements which operator on which devices comes from the operators' specs
(mibcore.ops.SPECS) alone; a resolution is cached per (operator, device type, selection).
"""
import contextlib
import dataclasses
import functools
import importlib.util
import os
import threading
from typing import Callable

import torch

from mibcore import _extension, ops
from mibcore.errors import UsageError
from mibcore.ops._spec import DEVICE_TYPES

NAMES = ("reference", "cpu", "triton", "cuda", "auto")

# Preference order of `auto`, fastest first, per device type (an operator's AUTO_ORDER overrides it).
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


def auto_order(op, device_type):
    """The backends `auto` tries for `op` on `device_type`, in order."""
    return ops.SPECS[op].auto_order.get(device_type) or _AUTO_ORDER.get(device_type, ("reference",))


@functools.lru_cache(maxsize=None)
def _triton_installed():
    # Cached: resolve() runs on every functional call and find_spec walks sys.path.
    return importlib.util.find_spec("triton") is not None


def _device_present(device_type):
    return device_type == "cpu" or (device_type == "cuda" and torch.cuda.is_available())


class BackendError(UsageError):
    """A backend was asked for that does not exist or cannot serve the given tensors: a user's
    choice (set, use, MIBCORE_BACKEND) or tensors on a device no backend serves, hence a
    UsageError (a ValueError; the CLI's exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """A backend: what it needs to run on this machine (`ready`). Which operators it implements
    and on which devices comes from the operators' specs (mibcore.ops.SPECS)."""

    name: str
    description: str
    ready: Callable[[], bool]

    @property
    def ops(self):
        """Names of the operators it implements."""
        return frozenset(name for name, spec in ops.SPECS.items() if self.name in spec.implementations)

    def serves(self, op, device_type):
        """Whether it can run operator `op` on `device_type` tensors on this machine now."""
        implementation = ops.SPECS[op].implementations.get(self.name)
        return (implementation is not None and device_type in implementation.devices and self.ready()
                and _device_present(device_type))

    def devices(self):
        """Device types it serves (for at least one operator) on this machine right now."""
        return tuple(d for d in DEVICE_TYPES if any(self.serves(op, d) for op in ops.SPECS))


BACKENDS = {
    "reference": Backend("reference", "pure PyTorch, the paper's formulas; the test oracle", lambda: True),
    "cpu": Backend("cpu", "C++ extension mibcore._C (OpenMP + SIMD)", _extension.available),
    "triton": Backend("triton", "Triton kernels (GPU; CPU through TRITON_INTERPRET=1)", _triton_installed),
    "cuda": Backend("cuda", "CUDA C++ extension mibcore._C", _extension.has_cuda_kernels),
}


def implementation(op, backend):
    """The torch operator that fused backend `backend` runs for `op` (the function, for the
    reference)."""
    return ops.SPECS[op].implementations[backend].target()


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
    return _environment_choice()


@functools.lru_cache(maxsize=None)
def _environment_choice():
    # Read once (an unknown name stays an error at every call, not a silent "auto"); tests that
    # change the variable call clear_cache().
    env = os.environ.get("MIBCORE_BACKEND", "").strip().lower()
    if not env:
        return "auto"
    try:
        return _check_name(env)
    except BackendError as error:
        raise BackendError(f"MIBCORE_BACKEND: {error}") from None


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
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    return _resolve(op, device_type, current())


def runner(op, device):
    """The callable that runs operator `op` on `device` under the current selection: the chosen
    backend's implementation, taking the normalized arguments of the op's public function."""
    if torch.compiler.is_compiling():
        return ops.SPECS[op].runner(_resolve_constant(op, device))
    key = (op, device.type, current())
    found = _runners.get(key)
    if found is None:
        found = _runners[key] = ops.SPECS[op].runner(_resolve(*key))
    return found


_runners = {}  # (op, device type, selection) -> callable: the per-call path is one lookup


@torch.compiler.assume_constant_result
def _resolve_constant(op, device):
    # Resolved once per compiled graph under torch.compile (the selection is plain Python
    # state that dynamo cannot guard on): change backends outside compiled regions.
    return resolve(op, device)


def clear_cache():
    """Forgets cached resolutions and the environment's choice (for tests that change what
    backends declare or MIBCORE_BACKEND)."""
    _runners.clear()
    _resolve.cache_clear()
    _environment_choice.cache_clear()


@functools.lru_cache(maxsize=None)
def _resolve(op, device_type, choice):
    if op not in ops.SPECS:
        raise BackendError(f"unknown operator {op!r}; the operators are: {', '.join(ops.SPECS)}")
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
        served = [d for d in DEVICE_TYPES if backend.serves(op, d)]
        why = f"it serves {', '.join(served)} tensors" if served else "it is not available on this machine"
        raise BackendError(
            f"backend {choice!r} cannot run {op} on {device_type} tensors: {why}. "
            f"Backends serving {device_type}: {', '.join(available(device_type)) or 'none'}"
        )
    return choice
