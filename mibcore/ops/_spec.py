"""OpSpec: everything about one operator, declared once, in mibcore/ops/<op>.py.

PyTorch's OpInfo is the model: one description of an operator that every generic consumer
iterates. The backend registry and the per-call dispatch (mibcore.backends), the functional API
(mibcore.functional), the AOT compile check (mibcore/kernels/aot.py), the benchmark suite's
operator cases and launch report (benchmarks/cases.py, launch_report.py) and the generic tests
(contract, double backward, operand checks, required backends) read the specs; none of them lists
operators by hand.
"""
import contextlib
import dataclasses
import functools
from typing import Callable, Optional

import torch

# The device types a backend can serve (the reference serves every one).
DEVICE_TYPES = ("cpu", "cuda")

# (rtol, atol) of each dtype against a float64 oracle, per device type; atol is relative to the
# largest |value| of the expected tensor (at least 1). An OpSpec may widen them (`tolerances`).
TOLERANCES = {
    "cpu": {
        torch.float64: (1e-10, 1e-12),
        torch.float32: (2e-5, 1e-6),
        torch.float16: (2e-3, 2e-3),
        torch.bfloat16: (1.6e-2, 1.6e-2),  # 2 ulp: the Triton interpreter truncates bf16
    },
    "cuda": {  # fast-math transcendentals, tensor-core accumulation order, fp16/bf16 rounding
        torch.float64: (1e-10, 1e-12),
        torch.float32: (2e-5, 2e-6),
        torch.float16: (4e-3, 4e-3),
        torch.bfloat16: (3e-2, 3e-2),
    },
}


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One backend's implementation: a torch operator (`op`, qualified: "mibcore::dropout") for a
    fused backend, or a plain Python `function` (the reference); `devices` are the device types
    it serves when its backend is ready."""

    devices: tuple
    op: Optional[str] = None
    function: Optional[Callable] = None

    def __post_init__(self):
        if (self.op is None) == (self.function is None):
            raise ValueError("an Implementation has exactly one of `op` (a torch operator) and `function`")

    def target(self):
        """The callable it runs: the torch operator's default overload, or the function."""
        if self.function is not None:
            return self.function
        namespace, name = self.op.split("::")
        return getattr(getattr(torch.ops, namespace), name).default


@dataclasses.dataclass(frozen=True)
class Sample:
    """Arguments of one call of an operator's public function. `random`: the result depends on
    the rng draw (dropout in training); then only fused backends are compared with each other
    (they all follow the Philox contract), not with the reference's Bernoulli draw. `depth`: per
    output, the number of products summed into each element (default 1)."""

    label: str
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    random: bool = False
    depth: tuple = ()  # per output: how many products each element sums (tolerances grow with its root)

    def tensors(self):
        """The tensors among the arguments (lists flattened), in order."""
        return [t for arg in self.args for t in (arg if isinstance(arg, (list, tuple)) else [arg])
                if isinstance(t, torch.Tensor)]

    def map(self, fn):
        """The sample with every tensor argument t replaced by fn(t)."""
        def one(arg):
            if isinstance(arg, (list, tuple)):
                return type(arg)(one(a) for a in arg)
            return fn(arg) if isinstance(arg, torch.Tensor) else arg
        return dataclasses.replace(self, args=one(self.args))

    def call(self, function, **overrides):
        return function(*self.args, **{**self.kwargs, **overrides})


@dataclasses.dataclass(frozen=True)
class Launch:
    """Host calls of the Triton wrappers for one row of the launch table (made on meta tensors:
    mibcore/kernels/_launch.recording() records the launches instead of running them). `passes` holds
    (pass name, call, bytes moved at least, flops); `report` marks rows of the launch report."""

    label: str
    dtype: torch.dtype
    passes: tuple
    report: bool = False


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One timed case of the benchmark suite (benchmarks/cases.py): make(device) -> Sample, whose
    floating tensors become leaves requiring grad (forward and backward are timed). The floor of
    forward + backward: `bytes_moved` for memory-bound operators, `flops` for GEMM-bound ones.
    kind: "paper" (the paper's shapes) or "scale"; quick: also timed by `--quick` runs."""

    label: str
    kind: str
    make: Callable
    bytes_moved: int = 0
    flops: int = 0
    quick: bool = True


@dataclasses.dataclass(frozen=True, eq=False)  # (one per operator: compared by identity)
class OpSpec:
    """One operator.

    name             the public function's name (mibcore.functional.<name>) and the backends' key
    function         the public function: checks its arguments once, then calls
                     `backends.runner(name, device)(*normalized)`
    implementations  backend -> Implementation; "reference" is required
    call_fused       how a fused backend's torch operator is called with the normalized arguments
                     (draws the rng, maps enums to codes, reduces): call_fused(op, *normalized)
    missing          backend -> why it does not implement the operator: a backend that CI
                     requires and that is neither implemented nor explained here fails the run
    auto_order       {device type: backends, fastest first} where it differs from the default
    samples          samples(device, dtype) -> [Sample]: odd, empty, strided shapes
    fuzz             fuzz(strategies, tensors) -> a hypothesis strategy of Samples (tests/test_fuzz.py
                     passes hypothesis.strategies and its strategy of tensors: the package does
                     not import hypothesis)
    paper_sample     paper_sample(device) -> Sample at the paper's shapes (per-call overhead benchmark)
    double_backward  () -> (float64 leaf tensors, function of them) for second-derivative tests
    launches         () -> [Launch]: the Triton launch table (AOT check, launch report)
    benchmarks       () -> [Benchmark]: the benchmark suite's cases of the operator
    baseline         the operator written with torch's own modules, called like `function` (e.g.
                     nn.Dropout's F.dropout): the benchmarks' baseline "torch" and what their
                     "compile" provider compiles; None: the eager reference is both
    gemm_floor       sample -> (fn, tensors): the operator's GEMMs alone on operands materialized
                     beforehand (the benchmarks' "cublas" provider on GPUs: a floor, not a drop-in)
    tolerances       {device type: {dtype: (rtol, atol)}} overriding TOLERANCES
    random_dtype     the dtype its random draws are computed in, whatever the operands' (float32: the
                     Box-Muller eps of reparameterize_kl), or None (exact draws: keep decisions). The
                     backends' samples agree up to its rounding of the transcendental functions
                     (DESIGN 5), so comparisons of sampled outputs across backends allow at least
                     its tolerance
    """

    name: str
    function: Callable
    implementations: dict
    call_fused: Callable
    samples: Callable
    double_backward: Callable
    paper_sample: Optional[Callable] = None
    fuzz: Optional[Callable] = None
    launches: Callable = lambda: ()
    benchmarks: Callable = lambda: ()
    baseline: Optional[Callable] = None
    gemm_floor: Optional[Callable] = None
    missing: dict = dataclasses.field(default_factory=dict)
    auto_order: dict = dataclasses.field(default_factory=dict)
    tolerances: dict = dataclasses.field(default_factory=dict)
    random_dtype: Optional[torch.dtype] = None

    def tolerance(self, dtype, device_type="cpu"):
        return self.tolerances.get(device_type, {}).get(dtype, TOLERANCES[device_type][dtype])

    def sampled_tolerance(self, dtype, device_type="cpu"):
        """The tolerance of an output that depends on a random draw, compared across backends."""
        rtol, atol = self.tolerance(dtype, device_type)
        if self.random_dtype is None:
            return rtol, atol
        floor = self.tolerance(self.random_dtype, device_type)
        return max(rtol, floor[0]), max(atol, floor[1])

    def __post_init__(self):
        if "reference" not in self.implementations:
            raise ValueError(f"{self.name}: an OpSpec needs a 'reference' implementation")
        both = set(self.missing) & set(self.implementations)
        if both:
            raise ValueError(f"{self.name}: {sorted(both)} both implemented and declared missing")

    def runner(self, backend):
        """The callable of `backend` taking the normalized arguments (mibcore.backends caches it)."""
        target = self.implementations[backend].target()
        if backend == "reference":
            return target
        return functools.partial(_fused_call, self.name, backend, functools.partial(self.call_fused, target))


def _fused_call(name, backend, call, *args):
    """call(*args), unless a transform the fused operators have no rule for is in use: refused
    with the operator's name and what to do, before the rng is drawn. (Their autograd is
    reverse-mode only: forward-mode AD returned zero tangents (Triton) or none, and torch.func
    spoke of an autograd.Function the user never wrote, or of a "random operation" for a call
    that draws nothing.)"""
    if not torch.compiler.is_compiling():
        transform = _transform_in_use(args)
        if transform is not None:
            raise NotImplementedError(
                f"mibcore.functional.{name}: the '{backend}' backend's fused operator does not support "
                f"{transform}; use the 'reference' backend for it (mibcore.backends.use(\"reference\")), "
                "whose operations torch differentiates and batches")
    return call(*args)


def _transform_in_use(args):
    """The name of the torch.func transform or forward-mode AD applied to `args`, or None."""
    interpreter = torch._C._functorch.peek_interpreter_stack()
    if interpreter is not None:
        kind = str(interpreter.key()).rsplit(".", 1)[-1].lower()  # grad (also vjp), jvp, vmap, functionalize
        return f"torch.func.{kind}" if kind in ("grad", "jvp", "vmap") else f"the torch.func {kind} transform"
    if torch.autograd.forward_ad._current_level >= 0:
        tensors = [t for a in args for t in (a if isinstance(a, (list, tuple)) else [a]) if isinstance(t, torch.Tensor)]
        if any(torch.autograd.forward_ad.unpack_dual(t).tangent is not None for t in tensors):
            return "forward-mode AD (torch.autograd.forward_ad dual tensors)"
    return None


def dtype_suffix(dtype):
    """A label's dtype part: nothing for float32, else " float16" etc."""
    return "" if dtype == torch.float32 else " " + str(dtype).removeprefix("torch.")


def meta(*shape, dtype=torch.float32):
    """A tensor with no storage, for launch tables: the Triton host code runs on it at any size and
    its launches are recorded, not run."""
    return torch.empty(shape, dtype=dtype, device="meta")


def meta_rng():
    return meta(2, dtype=torch.int64)


def strided(x):
    """x's values in a non-contiguous tensor (a transposed copy; for 1-d: every other element)."""
    if x.dim() >= 2:
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return torch.stack([x, x], -1)[..., 0]


@contextlib.contextmanager
def operator_replaced(spec, backend, fn):
    """Within the block, fused backend `backend` of `spec` calls fn(*operator arguments) in place
    of its torch operator; everything else on the per-call path runs as usual."""
    original = spec.implementations[backend]
    from mibcore import backends

    spec.implementations[backend] = Implementation(original.devices, function=fn)
    backends.clear_cache()
    try:
        yield
    finally:
        spec.implementations[backend] = original
        backends.clear_cache()


class _Reached(Exception):
    pass


def operator_arguments(spec, backend, sample):
    """The arguments fused backend `backend`'s torch operator receives for `sample`: the public
    function runs up to the operator call (its checks, the rng draw), which is not made."""
    from mibcore import backends

    reached = []

    def operator(*args):
        reached.append(args)
        raise _Reached

    with operator_replaced(spec, backend, operator), backends.use(backend):
        try:
            sample.call(spec.function)
        except _Reached:
            pass
    if not reached:
        raise ValueError(f"{spec.name}: the sample {sample.label!r} does not reach the operator")
    return reached[0]
