"""pytest-benchmark view of the benchmark cases: `pytest benchmarks --benchmark-only`.

Each case x provider is one benchmark of forward + backward (a training case: of its step or
epoch, with Adam); the runner
(`python -m benchmarks`) adds forward/backward splits, ratios, roofline and the table.
"""
import pytest
import torch

from . import cases as bench_cases
from .measure import _grads_for, _outputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PARAMS = [
    pytest.param(case, provider, id=f"{case.op}-{case.shape}-{provider}".replace(" ", "_"))
    for case in bench_cases.all_cases(quick=True)
    for provider in bench_cases.providers(case, DEVICE)
]


@pytest.mark.parametrize("case, provider", PARAMS)
def test_forward_backward(benchmark, case, provider):
    benchmark.group = f"{case.op} {case.shape}"
    if case.train:
        trainer, batches = case.make(DEVICE, provider)

        def train():
            trainer.run(batches())
            if DEVICE == "cuda":
                torch.cuda.synchronize()

        benchmark(train)
        return
    fn, tensors = case.make(DEVICE, provider)

    def step():
        for t in tensors:
            t.grad = None
        outputs = _outputs(fn(*tensors))
        torch.autograd.backward(outputs, _grads_for(outputs))
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark(step)
