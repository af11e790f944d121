"""Launch report of the Triton backend: `python -m benchmarks --launch-report`.

For the paper's and the scale shapes, per operator and pass: the launches the host code makes
(recorded on meta tensors, nothing runs: mibcore/kernels/_launch.recording), programs per launch, the
fewest bytes a pass must move (each input read once, each output written once) and its flops,
and the floor time at an H200's rates, so each kernel's design can be read against the
roofline before a GPU is at hand. Rates (leads from the vendor's datasheet, as quoted in the
device notes .library/device/H200.md; measure them on the machine): HBM3e 4.8 TB/s; dense
bf16/fp16 tensor cores 990 TFLOP/s; TF32 495 TFLOP/s; plain fp32 (IEEE, the FMA units) 67
TFLOP/s; fp64 (tensor cores) 67 TFLOP/s. 132 SMs.

`--sass` adds an achieved-time estimate for the elementwise kernels (dropout, reparameterize_kl),
read from their sm_90 SASS (compiled here, no GPU: mibcore/kernels/sass.py). The model: a launch
takes the longer of its memory floor (the bytes above at the HBM rate) and its issue time, the
most programs one SM runs (ceil(programs / 132)) x warps per program x the issue cycles of one
warp's instructions / 4 schedulers per SM at 1.98 GHz. Issue cycles per instruction, from the
CUDA C++ Programming Guide's throughput table for compute capability 9.0 (32 / results per clock
per SM sub-partition): fp32 arithmetic 1, 32-bit integer and logic 2, fp64 2, MUFU
(exp2/log2/sin/rcp/rsqrt) and type conversions 8, anything else (moves, memory, branches) 1. Each
instruction counts once: right where a program runs its loop once (these kernels at the report's
shapes). It leaves out launch latency, wave tails and the cost of uncoalesced accesses (the SASS
does not show strides): an estimate, compiled, not yet run.
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


CLOCK_HZ = 1.98e9  # H200 (SXM) boost clock
SCHEDULERS = 4  # warp schedulers (sub-partitions) per SM
ESTIMATED = ("mibcore.kernels.dropout", "mibcore.kernels.reparameterize_kl")  # (their programs loop once here)
_HALF_RATE = {"IADD3", "IMAD", "LOP3", "SHF", "ISETP", "LEA", "SEL", "PRMT", "IMNMX", "IABS", "I2FP", "POPC",
              "FLO", "DADD", "DMUL", "DFMA", "DSETP"}  # 32-bit integer and logic, fp64 (I2FP: Ampere's int->float)
_EIGHTH_RATE = {"MUFU", "F2F", "F2I", "I2F", "FRND"}  # the special-function unit, type conversions


def issue_cycles(opcode):
    """Issue cycles of one warp instruction on one SM sub-partition (the model above)."""
    base = opcode.split(".")[0]
    return 8 if base in _EIGHTH_RATE else 2 if base in _HALF_RATE else 1


def launch_issue_s(launch, label):
    """The issue time of one recorded launch from its sm_90 SASS (the model above)."""
    from mibcore.kernels import aot, sass

    spec = aot.specialize(launch, label)
    cycles = sum(map(issue_cycles, sass.opcodes(sass.sass(spec, 90))))
    warps = spec.options.get("num_warps", 4)  # (Triton's default)
    return math.ceil(math.prod(launch.grid) / SMS) * warps * cycles / SCHEDULERS / CLOCK_HZ


def estimate_s(launches, label, nbytes):
    """Estimated time of a pass: its memory floor or its launches' issue time, whichever is longer
    (None where a launch is not an elementwise kernel)."""
    if not launches or any(launch.kernel.fn.__module__ not in ESTIMATED for launch in launches):
        return None
    return max(nbytes / HBM_BYTES_PER_S, sum(launch_issue_s(launch, label) for launch in launches))


def rows(sass=False):
    from mibcore.kernels import _launch

    for op, label, dtype, which, call, nbytes, flops in _cases():
        with _launch.recording() as launches:
            call()
        memory_s = nbytes / HBM_BYTES_PER_S
        rate = TF32_FLOPS_PER_S if (dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32) else (
            FLOPS_PER_S[dtype])
        compute_s = flops / rate
        estimate = estimate_s(launches, f"{op} {label} {dtype}", nbytes) if sass else None
        yield {
            "op": op, "shape": label, "dtype": str(dtype).removeprefix("torch."), "pass": which,
            "launches": [(launch.kernel.__name__, math.prod(launch.grid)) for launch in launches],
            "bytes": nbytes, "flops": flops, "floor_us": 1e6 * max(memory_s, compute_s),
            "bound": "memory" if memory_s >= compute_s else "compute",
            "estimate_us": None if estimate is None else 1e6 * estimate,
        }


def report(sass=False):
    """The report's text; `sass`: with the estimate columns (compiles the elementwise kernels)."""
    lines = [
        f"Triton launch report: floors at H200 rates (HBM {HBM_BYTES_PER_S / 1e12:.1f} TB/s, bf16 "
        f"{FLOPS_PER_S[torch.bfloat16] / 1e12:.0f}, fp32 {FLOPS_PER_S[torch.float32] / 1e12:.0f} TFLOP/s), {SMS} SMs",
        f"{'op':18s} {'shape':24s} {'dtype':9s} {'pass':9s} {'MB':>9s} {'GFLOP':>8s} {'floor us':>9s} "
        f"{'bound':8s} {'est us':>7s} {'floor %':>7s} launches (kernel: programs, programs/SM)",
    ]
    for r in rows(sass):
        est = r["estimate_us"]
        estimated = f"{est:7.2f} {100 * r['floor_us'] / est:6.0f}%" if est else f"{'-':>7s} {'-':>7s}"
        launches = ", ".join(f"{name}: {n} ({n / SMS:.1f}/SM)" for name, n in r["launches"])
        lines.append(f"{r['op']:18s} {r['shape']:24s} {r['dtype']:9s} {r['pass']:9s} {r['bytes'] / 1e6:9.2f} "
                     f"{r['flops'] / 1e9:8.2f} {r['floor_us']:9.2f} {r['bound']:8s} {estimated} {launches}")
    return "\n".join(lines)
