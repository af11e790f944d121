"""The contract of every operator on every backend that serves it here, read from the operators'
specs (mibcore/ops/<op>.py): nothing in this file names an operator.

- every deterministic sample (odd, empty, strided shapes; every dtype) matches the reference run in
  float64, outputs and gradients, with the dtype and shape the reference gives;
- every random sample (dropout in training) matches, on each fused backend, the first fused
  backend run in float64 with the same generator: the Philox contract makes the masks and eps
  independent of backend, instruction set and dtype;
- the torch operators refuse operands on two devices and integer operands at their boundary.
"""
import pytest
import torch

import mibcore
from mibcore import backends
from mibcore.ops import SPECS
from mibcore.ops._spec import Sample, operator_arguments
from tests import utils

CASES = [(op, backend) for op in SPECS for backend in utils.backends(op)]
FUSED = [(op, backend) for op in SPECS for backend in utils.backends(op, fused=True)]
RANDOM = [(op, backend) for op, backend in FUSED if any(s.random for s in SPECS[op].samples("cpu", torch.float32))]
dtypes = pytest.mark.parametrize("dtype", utils.DTYPES, ids=lambda d: str(d).removeprefix("torch."))


def _outputs(result):
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _run(spec, backend, sample, seed=7):
    """(outputs, gradients of a fixed random projection of the outputs w.r.t. every tensor)."""
    leaves = sample.map(lambda t: t.detach().clone().requires_grad_())
    with backends.use(backend), utils.at_level(backend):
        rng = {"generator": torch.Generator().manual_seed(seed)} if sample.random else {}
        outputs = _outputs(leaves.call(spec.function, **rng))
    g = torch.Generator().manual_seed(seed)
    loss = sum((o.double() * torch.randn(o.shape, dtype=torch.float64, generator=g)).sum() for o in outputs)
    inputs = leaves.tensors()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True) if loss.requires_grad else [None] * len(inputs)
    return [o.detach() for o in outputs], [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]


def _compare(spec, dtype, actual, expected, what):
    rtol, atol = spec.tolerance(dtype)
    for i, (a, e) in enumerate(zip(actual, expected)):
        magnitude = max(1.0, float(e.abs().max())) if e.numel() else 1.0
        torch.testing.assert_close(a.double(), e.double(), rtol=rtol, atol=atol * magnitude, equal_nan=True,
                                   msg=lambda m, i=i: f"{what} [{i}]: {m}")


@dtypes
@pytest.mark.parametrize("op, backend", CASES)
def test_matches_the_float64_reference(op, backend, dtype):
    spec = SPECS[op]
    for sample in spec.samples("cpu", dtype):
        if sample.random:
            continue
        outputs, grads = _run(spec, backend, sample)
        expected, expected_grads = _run(spec, "reference", sample.map(lambda t: t.double()))
        same_dtype, _ = _run(spec, "reference", sample)
        for o, r in zip(outputs, same_dtype):
            assert (o.dtype, o.shape) == (r.dtype, r.shape), f"{op} {sample.label}: {o.dtype} {list(o.shape)}"
        _compare(spec, dtype, outputs, expected, f"{op} on {backend}, {sample.label}: output")
        _compare(spec, dtype, grads, expected_grads, f"{op} on {backend}, {sample.label}: gradient")


@dtypes
@pytest.mark.parametrize("op, backend", RANDOM)
def test_random_samples_follow_the_philox_contract(op, backend, dtype):
    spec = SPECS[op]
    first = utils.backends(op, fused=True)[0]
    for sample in (s for s in spec.samples("cpu", dtype) if s.random):
        outputs, grads = _run(spec, backend, sample)
        expected, expected_grads = _run(spec, first, sample.map(lambda t: t.double()))
        _compare(spec, dtype, outputs, expected, f"{op} on {backend}, {sample.label}: output")
        _compare(spec, dtype, grads, expected_grads, f"{op} on {backend}, {sample.label}: gradient")


def _first_operator_sample(spec):
    return next(s for s in spec.samples("cpu", torch.float32) if s.random or "eval" not in s.label)


def _tensors(args):
    return Sample("operator arguments", tuple(args)).tensors()


def _map_tensors(args, fn):
    return Sample("operator arguments", tuple(args)).map(fn).args


def _replace_last_floating(args, fn):
    last = [t for t in _tensors(args) if t.is_floating_point()][-1]
    return _map_tensors(args, lambda t: fn(t) if t is last else t)


@pytest.mark.parametrize("op, backend", utils.once_per_backend(FUSED))
def test_operators_refuse_mixed_devices_and_integer_operands(op, backend):
    spec = SPECS[op]
    target = spec.implementations[backend].target()
    args = operator_arguments(spec, backend, _first_operator_sample(spec))
    if len(_tensors(args)) > 1:
        with pytest.raises((ValueError, RuntimeError), match="device"):
            target(*_replace_last_floating(args, lambda t: torch.empty_like(t, device="meta")))
    with pytest.raises((TypeError, RuntimeError), match="floating point|float32, float64, float16 or bfloat16|dtype"):
        target(*_replace_last_floating(args, lambda t: t.long()))


@pytest.mark.parametrize("op, backend", utils.once_per_backend(FUSED))
def test_fake_kernels_check_the_rng(op, backend):
    # On meta tensors (torch.compile's fake tensors) the fakes run: they check the rng too.
    spec = SPECS[op]
    args = operator_arguments(spec, backend, _first_operator_sample(spec))
    if not any(t.dtype == torch.int64 for t in _tensors(args)):
        pytest.skip(f"{op} draws no random numbers")
    meta_args = _map_tensors(args, lambda t: torch.zeros(1, 2, dtype=torch.int64, device="meta")
                             if t.dtype == torch.int64 else torch.empty_like(t, device="meta"))
    with pytest.raises((TypeError, RuntimeError), match="rng"):
        spec.implementations[backend].target()(*meta_args)


@pytest.mark.parametrize("op", list(SPECS))
def test_the_operator_receives_tensors_of_its_declared_devices(op):
    # The spec's samples exercise the fused path (not only the public function's shortcuts).
    spec = SPECS[op]
    for backend in utils.backends(op, fused=True)[:1]:
        args = operator_arguments(spec, backend, _first_operator_sample(spec))
        devices = {t.device.type for t in _tensors(args)}
        assert devices <= set(spec.implementations[backend].devices), (op, backend, devices)


def test_every_operator_has_its_public_function():
    assert mibcore.functional.__all__ == list(SPECS)
    for op, spec in SPECS.items():
        assert getattr(mibcore.functional, op) is spec.function
