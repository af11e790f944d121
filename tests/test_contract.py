"""The contract of every operator on every backend and device that serves it, read from the
operators' specs (mibcore/ops/<op>.py): nothing in this file names an operator.

- every deterministic sample (odd, empty, strided shapes; every dtype; larger ones on GPUs) matches
  the reference run in float64 on the CPU, outputs and gradients, with the reference's dtype and
  shape, within the device's tolerances;
- every random sample (dropout in training, sampled z) matches, on each fused backend, the first
  fused backend of that device run in float64 with the same generator: the Philox contract makes
  the masks and eps independent of backend, instruction set and dtype; on GPUs the torch operator
  also equals the cpu backend's given the same rng tensor;
- the torch operators refuse operands on two devices and integer operands at their boundary, and
  their fakes check the rng.

The cuda cases are marked `gpu` (collected everywhere, skipped without a GPU: .ci/gpu_check.sh runs
`pytest -m gpu`); `test_smoke` (marked `smoke` too) is the device check's first, quick tier.
"""
import pytest
import torch

import mibcore
from mibcore import backends
from mibcore.ops import SPECS
from mibcore.ops._spec import Sample, operator_arguments
from tests import utils


def _cases(fused=False, random=False):
    cases = []
    for device in ("cpu", "cuda"):
        marks = [pytest.mark.gpu] if device == "cuda" else []
        for op in SPECS:
            if random and not any(s.random for s in SPECS[op].samples("cpu", torch.float32)):
                continue
            for backend in utils.backends(op, device, fused=fused):
                cases.append(pytest.param(op, backend, device, marks=marks, id=f"{op}-{backend.id}-{device}"))
    return cases


dtypes = pytest.mark.parametrize("dtype", utils.DTYPES, ids=lambda d: str(d).removeprefix("torch."))
FUSED_CPU = [(op, b) for op in SPECS for b in utils.backends(op, fused=True)]


def _against_the_reference(op, backend, device, sample, dtype):
    spec = SPECS[op]
    outputs, grads = utils.run_sample(spec, backend, sample)
    expected, expected_grads = utils.run_sample(spec, "reference", sample.map(lambda t: t.detach().cpu().double()))
    same_dtype, _ = utils.run_sample(spec, "reference", sample.map(lambda t: t.detach().cpu()), gradients=False)
    for o, r in zip(outputs, same_dtype):
        assert (o.dtype, o.shape) == (r.dtype, r.shape), f"{op} {sample.label}: {o.dtype} {list(o.shape)}"
    what = f"{op} on {backend} ({device}), {sample.label}"
    utils.compare_outputs(spec, device, outputs, expected, f"{what}: output", sample.depth)
    utils.compare_outputs(spec, device, grads, expected_grads, f"{what}: gradient")


@dtypes
@pytest.mark.parametrize("op, backend, device", _cases())
def test_matches_the_float64_reference(op, backend, device, dtype):
    for sample in SPECS[op].samples(device, dtype):
        if not sample.random:
            _against_the_reference(op, backend, device, sample, dtype)


@dtypes
@pytest.mark.parametrize("op, backend, device", [
    pytest.param(*p.values, marks=[*p.marks, pytest.mark.smoke], id=p.id) for p in _cases(fused=True) if p.values[2] == "cuda"
])
def test_smoke(op, backend, device, dtype):
    # One deterministic sample per operator, backend and dtype: the device check's first tier.
    sample = next(s for s in SPECS[op].samples(device, dtype) if not s.random and s.tensors()[0].numel())
    _against_the_reference(op, backend, device, sample, dtype)


@dtypes
@pytest.mark.parametrize("op, backend, device", _cases(fused=True, random=True))
def test_random_samples_follow_the_philox_contract(op, backend, device, dtype):
    spec = SPECS[op]
    first = utils.backends(op, device, fused=True)[0]
    for sample in (s for s in spec.samples(device, dtype) if s.random):
        outputs, grads = utils.run_sample(spec, backend, sample)
        expected, expected_grads = utils.run_sample(spec, first, sample.map(lambda t: t.double()))
        what = f"{op} on {backend} ({device}), {sample.label}"
        utils.compare_outputs(spec, device, outputs, expected, f"{what}: output", sample.depth, sampled=True)
        utils.compare_outputs(spec, device, grads, expected_grads, f"{what}: gradient", sampled=True)


@dtypes
@pytest.mark.parametrize("op, backend, device", [p for p in _cases(fused=True, random=True) if p.values[2] == "cuda"])
def test_gpu_operators_equal_the_cpu_backend_given_the_same_rng(op, backend, device, dtype):
    spec = SPECS[op]
    if "cpu" not in spec.implementations or not backends.BACKENDS["cpu"].serves(op, "cpu"):
        pytest.skip(f"no cpu backend for {op} here")
    for sample in (s for s in spec.samples(device, dtype) if s.random):
        args = operator_arguments(spec, backend, sample)
        gpu = utils.as_tuple(spec.implementations[backend].target()(*args))
        cpu = utils.as_tuple(spec.implementations["cpu"].target()(*_map_tensors(args, lambda t: t.cpu())))
        utils.compare_outputs(spec, device, [o.cpu() for o in gpu], cpu, f"{op} on {backend}, {sample.label}",
                              sampled=True)


def _tensors(args):
    return Sample("operator arguments", tuple(args)).tensors()


def _map_tensors(args, fn):
    return Sample("operator arguments", tuple(args)).map(fn).args


def _first_operator_sample(spec):
    return next(s for s in spec.samples("cpu", torch.float32) if s.random or "eval" not in s.label)


def _replace_last_floating(args, fn):
    last = [t for t in _tensors(args) if t.is_floating_point()][-1]
    return _map_tensors(args, lambda t: fn(t) if t is last else t)


@pytest.mark.parametrize("op, backend", utils.once_per_backend(FUSED_CPU))
def test_operators_refuse_mixed_devices_and_integer_operands(op, backend):
    spec = SPECS[op]
    target = spec.implementations[backend].target()
    args = operator_arguments(spec, backend, _first_operator_sample(spec))
    if len(_tensors(args)) > 1:
        with pytest.raises(ValueError, match="device"):
            target(*_replace_last_floating(args, lambda t: torch.empty_like(t, device="meta")))
    with pytest.raises(TypeError, match="floating point|float32, float64, float16 or bfloat16|dtype"):
        target(*_replace_last_floating(args, lambda t: t.long()))


@pytest.mark.parametrize("op, backend", utils.once_per_backend(FUSED_CPU))
def test_fake_kernels_check_the_rng(op, backend):
    # On meta tensors (torch.compile's fake tensors) the fakes run: they check the rng too.
    spec = SPECS[op]
    args = operator_arguments(spec, backend, _first_operator_sample(spec))
    if not any(t.dtype == torch.int64 for t in _tensors(args)):
        pytest.skip(f"{op} draws no random numbers")
    meta_args = _map_tensors(args, lambda t: torch.zeros(1, 2, dtype=torch.int64, device="meta")
                             if t.dtype == torch.int64 else torch.empty_like(t, device="meta"))
    with pytest.raises(ValueError, match="rng"):
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


def test_sampled_outputs_allow_the_rounding_of_the_draws_dtype():
    # reparameterize_kl draws eps in fp32 for every dtype (Box-Muller; DESIGN 5: backends agree up
    # to fp32 rounding of the transcendentals), so its fp64 samples are compared across backends at
    # fp32's tolerance (an H200 gave 2e-9 relative against the cpu backend); exact draws (keep
    # decisions) keep each dtype's own.
    rkl, dropout = SPECS["reparameterize_kl"], SPECS["dropout"]
    for device_type in ("cpu", "cuda"):
        assert rkl.sampled_tolerance(torch.float64, device_type) == rkl.tolerance(torch.float32, device_type)
        assert rkl.sampled_tolerance(torch.float16, device_type) == rkl.tolerance(torch.float16, device_type)
        assert dropout.sampled_tolerance(torch.float64, device_type) == dropout.tolerance(torch.float64, device_type)
