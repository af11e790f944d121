"""Launch report of the Triton backend: `python -m benchmarks --launch-report`.

For the paper's and the scale shapes, per operator and pass: the launches the host code makes
(recorded on meta tensors, nothing runs: mibcore/kernels/_launch.recording), programs per launch, the
fewest bytes a pass must move (each input read once, each output written once) and its flops,
and the floor time at an H200's rates, so each kernel's design can be read against the
roofline before a GPU is at hand. Rates (leads from the vendor's datasheet, as quoted in the
device notes .library/device/H200.md; measure them on the machine): HBM3e 4.8 TB/s; dense
bf16/fp16 tensor cores 990 TFLOP/s; TF32 495 TFLOP/s; plain fp32 (IEEE, the FMA units) 67
TFLOP/s; fp64 (tensor cores) 67 TFLOP/s. 132 SMs.
"""
import math

import torch

SMS = 132
HBM_BYTES_PER_S = 4.8e12
FLOPS_PER_S = {torch.bfloat16: 990e12, torch.float16: 990e12, torch.float32: 67e12, torch.float64: 67e12}
TF32_FLOPS_PER_S = 495e12


def _cases():
    """(op, shape label, dtype, pass, call, bytes, flops): the rows of the operators' launch tables
    (OpSpec.launches) marked for the report."""
    from mibcore.ops import SPECS

    for spec in SPECS.values():
        for launch in spec.launches():
            if launch.report:
                for which, call, nbytes, flops in launch.passes:
                    yield spec.name, launch.label, launch.dtype, which, call, nbytes, flops


def rows():
    from mibcore.kernels import _launch

    for op, label, dtype, which, call, nbytes, flops in _cases():
        with _launch.recording() as launches:
            call()
        memory_s = nbytes / HBM_BYTES_PER_S
        rate = TF32_FLOPS_PER_S if (dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32) else (
            FLOPS_PER_S[dtype])
        compute_s = flops / rate
        yield {
            "op": op, "shape": label, "dtype": str(dtype).removeprefix("torch."), "pass": which,
            "launches": [(launch.kernel.__name__, math.prod(launch.grid)) for launch in launches],
            "bytes": nbytes, "flops": flops, "floor_us": 1e6 * max(memory_s, compute_s),
            "bound": "memory" if memory_s >= compute_s else "compute",
        }


def report():
    lines = [
        f"Triton launch report: floors at H200 rates (HBM {HBM_BYTES_PER_S / 1e12:.1f} TB/s, bf16 "
        f"{FLOPS_PER_S[torch.bfloat16] / 1e12:.0f}, fp32 {FLOPS_PER_S[torch.float32] / 1e12:.0f} TFLOP/s), {SMS} SMs",
        f"{'op':18s} {'shape':24s} {'dtype':9s} {'pass':9s} {'MB':>9s} {'GFLOP':>8s} {'floor us':>9s} "
        f"{'bound':8s} launches (kernel: programs, programs/SM)",
    ]
    for r in rows():
        launches = ", ".join(f"{name}: {n} ({n / SMS:.1f}/SM)" for name, n in r["launches"])
        lines.append(f"{r['op']:18s} {r['shape']:24s} {r['dtype']:9s} {r['pass']:9s} {r['bytes'] / 1e6:9.2f} "
                     f"{r['flops'] / 1e9:8.2f} {r['floor_us']:9.2f} {r['bound']:8s} {launches}")
    return "\n".join(lines)
