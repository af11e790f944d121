"""Host-side helpers shared by the Triton kernel wrappers: every launch goes through `launch`,
so that `recording()` can list the launches the host code makes (mibcore/kernels/aot.py compiles them
ahead of time) without running them."""
import contextlib
import dataclasses
import struct
import warnings

import torch

# Grid limits of CUDA: axis 0 up to 2^31 - 1 programs, axes 1 and 2 up to 65535.
MAX_GRID = (2**31 - 1, 65535, 65535)
# Streaming multiprocessors assumed where the device cannot be asked (recording on meta
# tensors: an H100/H200 has 132).
DEFAULT_SMS = 132
# Under the interpreter (CPU tensors) every program costs milliseconds: split work in few.
_INTERPRETER_PROGRAMS = 8


@dataclasses.dataclass
class Launch:
    kernel: object       # the @triton.jit function
    grid: tuple
    args: tuple          # positional arguments (tensors, ints, floats)
    constexprs: dict     # keyword (compile-time) arguments
    # For the launch report's SASS estimate (benchmarks/launch_report.py): iterations per program
    # of each loop of the kernel, in program order (() : each instruction counts once), and the
    # bytes the launch moves, its estimate where ptxas reshaped its loops (unrolled a reduction).
    trips: tuple = ()
    moves: int = 0


_recorders = []


@contextlib.contextmanager
def recording():
    """Within the block, launches are appended to the yielded list and not run (the outputs
    stay uninitialized): host code can be driven with meta tensors, at any size."""
    launches = []
    _recorders.append(launches)
    try:
        yield launches
    finally:
        _recorders.pop()


def launch(kernel, grid, *args, trips=(), moves=0, **constexprs):
    """kernel[grid](*args, **constexprs), or recorded (recording()). `trips`: see Launch."""
    grid = tuple(int(g) for g in grid)
    for axis, (size, limit) in enumerate(zip(grid, MAX_GRID)):
        if size > limit:
            raise RuntimeError(f"{kernel.__name__}: grid axis {axis} of {size} programs exceeds CUDA's {limit}")
    if _recorders:
        _recorders[-1].append(Launch(kernel, grid, args, constexprs, tuple(int(t) for t in trips), int(moves)))
        return
    if all(grid):
        with device_context(args):
            kernel[grid](*args, **constexprs)


def device_context(args):
    """Makes the GPU of the first CUDA tensor the current one (a no-op for CPU tensors)."""
    for t in args:
        if isinstance(t, torch.Tensor) and t.is_cuda:
            return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def target_programs(t):
    """How many programs a launch should have to fill the device of `t`: two per SM."""
    if t.is_cuda:
        return 2 * torch.cuda.get_device_properties(t.device).multi_processor_count
    return 2 * DEFAULT_SMS if t.device.type == "meta" else _INTERPRETER_PROGRAMS


def dot_precision(dtype):
    """input_precision of tl.dot for `dtype` operands: IEEE fp32 unless the user enabled TF32
    for matrix products (torch.backends.cuda.matmul.allow_tf32); other dtypes ignore it."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def double_bits(x):
    """The bits of float `x` as a double, in an int64: a Python float argument reaches a
    Triton kernel as float32, so float64 scalars travel like this and are bitcast back."""
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


def alert_not_deterministic(caller):
    """torch's non-determinism alert (torch has no Python binding of it): an error under
    torch.use_deterministic_algorithms(True), a warning with warn_only=True, else nothing."""
    if not torch.are_deterministic_algorithms_enabled():
        return
    message = (f"{caller} does not have a deterministic implementation, but you set "
               "'torch.use_deterministic_algorithms(True)'. Use a backend whose implementation is "
               "deterministic (see the README's Determinism).")
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(message, stacklevel=3)
    else:
        raise RuntimeError(message)
