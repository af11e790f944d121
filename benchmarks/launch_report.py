"""Launch report of the Triton backend: `python -m benchmarks --launch-report`.

For the paper's and the scale shapes, per operator and pass: the launches the host code makes
(recorded on meta tensors, nothing runs: mibcore/kernels/_launch.recording), programs per launch, the
fewest bytes a pass must move (each input read once, each output written once) and its flops,
and the floor time at an H200's rates, so each kernel's design can be read against the
roofline before a GPU is at hand. Rates (leads from the vendor's datasheet, as quoted in the
device notes .library/device/H200.md; measure them on the machine): HBM3e 4.8 TB/s; dense
bf16/fp16 tensor cores 990 TFLOP/s; TF32 495 TFLOP/s; plain fp32 (IEEE, the FMA units) 67
TFLOP/s; fp64 (tensor cores) 67 TFLOP/s. 132 SMs.

`--sass` adds an achieved-time estimate for the elementwise kernels (dropout, reparameterize_kl)
and tensor_fusion, read from their sm_90 SASS (compiled here, no GPU: mibcore/kernels/sass.py).
The model: a pass takes the longer of its memory floor (the bytes above at the HBM rate) and the
sum of its launches' issue times, the most programs one SM runs (ceil(programs / 132)) x warps
per program x the issue cycles of one warp's instructions / 4 schedulers per SM at 1.98 GHz.
Issue cycles per instruction, from the CUDA C++ Programming Guide's throughput table for compute
capability 9.0 (32 / results per clock per SM sub-partition): fp32 arithmetic 1, 32-bit integer
and logic 2, fp64 2, MUFU (exp2/log2/sin/rcp/rsqrt) and type conversions 8, anything else (moves,
memory, branches) 1. Each
instruction counts once, times the iterations of the loops that contain it where the host code
gives them (Launch.trips: the tensor_fusion GEMM loops); a launch whose SASS loops do not match
them (ptxas unrolled a reduction loop) counts its bytes (Launch.moves) at the HBM rate instead.
It leaves out launch latency, wave tails and the cost of uncoalesced accesses (the SASS
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
ESTIMATED = ("mibcore.kernels.dropout", "mibcore.kernels.reparameterize_kl", "mibcore.kernels.tensor_fusion")
_HALF_RATE = {"IADD3", "IMAD", "LOP3", "SHF", "ISETP", "LEA", "SEL", "PRMT", "IMNMX", "IABS", "I2FP", "POPC",
              "FLO", "DADD", "DMUL", "DFMA", "DSETP"}  # 32-bit integer and logic, fp64 (I2FP: Ampere's int->float)
_EIGHTH_RATE = {"MUFU", "F2F", "F2I", "I2F", "FRND"}  # the special-function unit, type conversions


def issue_cycles(opcode):
    """Issue cycles of one warp instruction on one SM sub-partition (the model above)."""
    base = opcode.split(".")[0]
    return 8 if base in _EIGHTH_RATE else 2 if base in _HALF_RATE else 1


def program_cycles(text, trips):
    """Issue cycles of one warp through one program of a disassembly: each instruction's cycles
    times the trips of the loops that contain it (`trips`: per loop, in program order; () counts
    each instruction once). None where the SASS has other loops than `trips` names."""
    from mibcore.kernels import sass

    ops = [op for op, _, _, _ in sass.lines(text)]
    if not trips:
        return sum(map(issue_cycles, ops))
    spans = sass.loops(text)
    if len(spans) != len(trips):
        return None
    return sum(issue_cycles(op) * math.prod(t for (a, b), t in zip(spans, trips) if a <= i <= b)
               for i, op in enumerate(ops))


def launch_s(launch, label):
    """The estimated time of one recorded launch from its sm_90 SASS (the model above)."""
    from mibcore.kernels import aot, sass

    spec = aot.specialize(launch, label)
    cycles = program_cycles(sass.sass(spec, 90), launch.trips)
    if cycles is None:
        return launch.moves / HBM_BYTES_PER_S if launch.moves else None
    warps = spec.options.get("num_warps", 4)  # (Triton's default)
    return math.ceil(math.prod(launch.grid) / SMS) * warps * cycles / SCHEDULERS / CLOCK_HZ


def estimate_s(launches, label, nbytes):
    """Estimated time of a pass: its memory floor or its launches' times, whichever is longer
    (None where a launch is not one of the estimated kernels, or cannot be counted)."""
    if not launches or any(launch.kernel.fn.__module__ not in ESTIMATED for launch in launches):
        return None
    times = [launch_s(launch, label) for launch in launches]
    return None if None in times else max(nbytes / HBM_BYTES_PER_S, sum(times))


def tensor_fusion_figures(arch=90):
    """The design figures of the Triton tensor_fusion at the paper's shape (fp32, dropout 0.5), from
    its sm_90 SASS: Philox blocks per outer-product element in each pass, the forward main loop's
    share of multiply-adds, and the estimate against the floor per pass (rows())."""
    from mibcore.kernels import _launch, aot, sass

    label = "B32 50x50x50->50 p=0.5"
    out = {}
    for r in rows(sass=True, only=("tensor_fusion", label, torch.float32)):
        out[r["pass"]] = {"floor_us": r["floor_us"], "estimate_us": r["estimate_us"]}
    for op, shape, dtype, which, call, nbytes, flops in _cases():
        if (op, shape, dtype) != ("tensor_fusion", label, torch.float32):
            continue
        with _launch.recording() as launches:
            call()
        blocks = 0.0
        for launch in launches:
            spec = aot.specialize(launch, label)
            text = sass.sass(spec, arch)
            threads = 32 * spec.options.get("num_warps", 4)
            blocks += sass.philox_rounds(text) / 10 * threads * math.prod(launch.grid)  # (no Philox in a loop)
            if which == "forward" and launch.kernel.__name__ == "_forward_kernel":
                out[which]["fma_share"] = sass.fma_share(sass.main_loop(text))
        out[which]["philox_per_element"] = blocks / (32 * 51**3)
    return out


def rows(sass=False, only=None):
    """The report's rows; `only`: (op, shape label, dtype) of the rows wanted."""
    from mibcore.kernels import _launch

    for op, label, dtype, which, call, nbytes, flops in _cases():
        if only and (op, label, dtype) != only:
            continue
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
    """The report's text; `sass`: with the estimate columns (compiles the estimated kernels) and
    tensor_fusion's design figures."""
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
    if sass:
        for which, f in tensor_fusion_figures().items():
            fma = f", forward main loop {100 * f['fma_share']:.0f}% FFMA" if "fma_share" in f else ""
            lines.append(f"tensor_fusion B32 50x50x50->50 p=0.5 fp32 {which}: {f['philox_per_element']:.3f} Philox "
                         f"blocks per outer-product element{fma}, estimate {f['estimate_us']:.1f} us = "
                         f"{f['estimate_us'] / f['floor_us']:.1f}x the {f['floor_us']:.1f} us floor "
                         "(compiled, not yet run)")
    return "\n".join(lines)
