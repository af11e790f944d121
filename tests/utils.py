"""What every operator's tests share: the backends they run, dtypes and tolerances.

The backends a test runs are those that serve the operator on this machine; the conftest fails
the run when a backend named in MIBCORE_REQUIRE_BACKENDS (set by .ci/run) is missing, so the
suite never quietly shrinks to the reference backend.
"""
import contextlib
import math
import os

import torch

import mibcore
import mibcore.ops._spec
from mibcore.ops.rng import draw_rng
from tests import philox

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

TOLERANCES = mibcore.ops._spec.TOLERANCES["cpu"]  # (rtol, atol) against a float64 oracle, per device


def required_backends():
    """The backends this run must have (MIBCORE_REQUIRE_BACKENDS, comma-separated)."""
    return [b.strip() for b in os.environ.get("MIBCORE_REQUIRE_BACKENDS", "").split(",") if b.strip()]


def missing_required_backends():
    """What this run lacks of MIBCORE_REQUIRE_BACKENDS: ["backend" or "backend for op"], per
    backend and per operator (an operator's spec may declare a backend `missing`, with a reason)."""
    missing = []
    for name in required_backends():
        if name not in mibcore.backends.BACKENDS or not mibcore.backends.BACKENDS[name].devices():
            missing.append(name)
            continue
        for op, spec in mibcore.ops.SPECS.items():
            if name not in spec.missing and not any(
                mibcore.backends.BACKENDS[name].serves(op, d) for d in mibcore.ops._spec.DEVICE_TYPES
            ):
                missing.append(f"{name} for {op}")
    return missing


class Backend(str):
    """A backend name that also carries, for `cpu`, the instruction-set level its kernels run at
    (mibcore.cpu_isa). It equals the plain name, so `mibcore.backends.use(b)` and `b != "triton"`
    work; the conftest names the test case after the level and sets it while the test runs."""

    def __new__(cls, name, isa=None):
        self = super().__new__(cls, name)
        self.isa = isa
        return self

    @property
    def id(self):
        return f"{self}-{self.isa}" if self.isa else str(self)


def cpu_levels():
    """The CPU kernels' levels this machine can run (an AVX2 machine: avx2 and baseline)."""
    return list(reversed(mibcore.cpu_isa.available())) if mibcore._extension.available() else []


def backends(op, device="cpu", *, fused=False):
    """Backends that serve operator `op` on `device` here (without the reference if `fused`);
    the `cpu` backend once per instruction-set level this CPU supports. For "cuda": those that
    would serve it on a GPU (declared for cuda and built), GPU present or not: their tests are
    marked `gpu` and skip without one, so that they are collected (and counted) everywhere."""
    device_type = torch.device(device).type
    out = []
    for name, backend in mibcore.backends.BACKENDS.items():
        implementation = mibcore.ops.SPECS[op].implementations.get(name)
        if implementation is None or (fused and name == "reference"):
            continue
        if device_type == "cuda":
            serves = device_type in implementation.devices and backend.ready()
        else:
            serves = backend.serves(op, device_type)
        if serves:
            levels = cpu_levels() if name == "cpu" else [None]
            out.extend(Backend(name, isa) for isa in levels)
    return out


def once_per_backend(cases):
    """(op, backend) cases with the cpu backend at one level only (for checks of registration,
    not numerics)."""
    seen, out = set(), []
    for op, backend in cases:
        if (op, str(backend)) not in seen:
            seen.add((op, str(backend)))
            out.append((op, backend))
    return out


def as_tuple(result):
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def run_sample(spec, backend, sample, *, seed=7, gradients=True):
    """`sample` through `spec`'s public function on `backend` (a random sample with a generator
    seeded with `seed`, on the sample's device): (outputs, gradients of a fixed random projection
    of the outputs w.r.t. every tensor argument), all on the CPU."""
    leaves = sample.map(lambda t: t.detach().clone().requires_grad_(gradients))
    device = leaves.tensors()[0].device
    with mibcore.backends.use(backend), at_level(backend):
        rng = {"generator": torch.Generator(device).manual_seed(seed)} if sample.random else {}
        outputs = as_tuple(leaves.call(spec.function, **rng))
    inputs = leaves.tensors()
    grads = [None] * len(inputs)
    if gradients:
        g = torch.Generator().manual_seed(seed)
        loss = sum((o.double() * torch.randn(o.shape, dtype=torch.float64, generator=g).to(o.device)).sum()
                   for o in outputs)
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        grads = [(torch.zeros_like(x) if g is None else g).cpu() for x, g in zip(inputs, grads)]
    return [o.detach().cpu() for o in outputs], grads


def compare_outputs(spec, device, actual, expected, what, depth=(), sampled=False):
    """actual == expected (float64) within the spec's tolerance of each output's dtype on
    `device`, atol relative to the largest |expected| (at least 1), widened by the square root of
    the output's depth (Sample.depth). `sampled`: outputs of a random draw compared across
    backends (at least the tolerance of the dtype the draw is computed in: OpSpec.random_dtype)."""
    device_type = torch.device(device).type
    for i, (a, e) in enumerate(zip(actual, expected)):
        rtol, atol = (spec.sampled_tolerance if sampled else spec.tolerance)(a.dtype, device_type)
        widen = math.sqrt(max(depth[i] if i < len(depth) else 1, 1))
        e = e.to(a.dtype).double()  # (rounded to the output's dtype: past its range, the result is inf)
        finite = e[torch.isfinite(e)]
        magnitude = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
        torch.testing.assert_close(a.double(), e, rtol=rtol * widen, atol=atol * widen * magnitude,
                                   equal_nan=True, msg=lambda m, i=i: f"{what} [{i}]: {m}")


def predicted_keep(shape, p, *, rng=None, seed=None):
    """The keep mask every fused backend draws for a tensor of `shape` with dropout p (the Philox
    contract, tests/philox.py): from an rng tensor, from a torch.Generator seeded with `seed`, or
    from the default CPU generator's next draw."""
    if rng is None:
        rng = draw_rng("cpu", None if seed is None else torch.Generator().manual_seed(seed))
    return philox.dropout_keep_mask(shape, rng, 1.0 - p)


@contextlib.contextmanager
def at_level(backend):
    """Runs the block at `backend`'s CPU instruction-set level (nothing for other backends)."""
    isa = getattr(backend, "isa", None)
    if isa is None:
        yield
    else:
        with mibcore.cpu_isa.use(isa):
            yield


def rounding_bound(depth, magnitude, dtype, products=4):
    """The worst-case rounding error of sums of `depth` products computed in `dtype`:
    gamma_{depth + products} * magnitude, where magnitude is the same computation on absolute
    values (sum |a_k b_k| per output element), gamma_n = n u / (1 - n u) and u the unit roundoff.
    `products` counts the roundings inside each term (multiplies, scales) and the final store.
    Any summation order and blocking (AVX-512, AVX2, baseline, a BLAS) stays within it."""
    n = (depth + products) * torch.finfo(dtype).eps / 2
    return magnitude.double().abs() * (n / (1 - n))


def assert_within(actual, expected, bound, name="value"):
    """|actual - expected| <= bound elementwise (in float64), with the worst element named."""
    error = (actual.double() - expected.double()).abs()
    excess = error - bound.double()
    if excess.numel() and excess.max() > 0:
        i = int(excess.argmax())
        raise AssertionError(
            f"{name}: error {error.flatten()[i]:.3g} above its rounding bound {bound.double().flatten()[i]:.3g} "
            f"at flat index {i} ({int((excess > 0).sum())} of {excess.numel()} elements)"
        )


def assert_close(actual, expected, dtype, scale=1.0):
    """actual == expected within `dtype`'s tolerance (times `scale`), compared in float64."""
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol * scale, atol=atol * scale)
