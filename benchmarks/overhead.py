"""Per-call overhead of the functional API: `python -m benchmarks --overhead`.

For each operator (its spec's paper-shape sample) and each fused backend serving the device: the
time of the public function with the backend's torch operator replaced by one that returns
precomputed outputs (mibcore.ops._spec.operator_replaced), so that what is timed is exactly the
per-call path: argument checks, backend resolution, the rng draw, the call, the KL reduction.
Beside it, the torch operator's own time, for scale. Medians of `repeats` runs of `number` calls.
"""
import statistics
import timeit

import torch

from mibcore import backends
from mibcore.ops import SPECS
from mibcore.ops._spec import operator_arguments, operator_replaced

TARGET_US = 25.0


def _median_us(fn, number, repeats):
    for _ in range(max(10, number // 10)):
        fn()
    return 1e6 * statistics.median(timeit.repeat(fn, number=number, repeat=repeats)) / number


def rows(device="cpu", number=200, repeats=9):
    for name, spec in SPECS.items():
        if spec.paper_sample is None:
            continue
        sample = spec.paper_sample(device)
        for backend in backends.available(device):
            if backend == "reference" or not backends.BACKENDS[backend].serves(name, torch.device(device).type):
                continue
            operator = spec.implementations[backend].target()
            args = operator_arguments(spec, backend, sample)
            outputs = operator(*args)
            with operator_replaced(spec, backend, lambda *a: outputs), backends.use(backend):
                overhead = _median_us(lambda: sample.call(spec.function), number, repeats)
            kernel = _median_us(lambda: operator(*args), max(5, number // 20), repeats)
            yield {"op": name, "shape": sample.label, "backend": backend, "overhead_us": overhead, "operator_us": kernel}


def report(device="cpu"):
    lines = [f"Per-call overhead of the functional API over the torch operator ({device}, "
             f"{torch.get_num_threads()} threads; target <= {TARGET_US:.0f} us)",
             f"{'op':18s} {'shape':24s} {'backend':8s} {'overhead us':>12s} {'operator us':>12s}"]
    for r in rows(device):
        lines.append(f"{r['op']:18s} {r['shape']:24s} {r['backend']:8s} {r['overhead_us']:12.1f} {r['operator_us']:12.1f}")
    return "\n".join(lines)
