"""Launch report of the Triton backend: `python -m benchmarks --launch-report`.

For the paper's and the scale shapes, per operator and pass: the launches the host code makes
(recorded on meta tensors, nothing runs: kernels/_launch.recording), programs per launch, the
fewest bytes a pass must move (each input read once, each output written once) and its flops,
and the floor time at an H200's rates, so each kernel's design can be read against the
roofline before a GPU is at hand. Rates (leads from the vendor's datasheet, as quoted in the
device notes .library/device/H200.md; measure them on the machine): HBM3e 4.8 TB/s; dense
bf16/fp16 tensor cores 990 TFLOP/s; TF32 495 TFLOP/s; plain fp32 (IEEE, the FMA units) 67
TFLOP/s; fp64 (tensor cores) 67 TFLOP/s. 132 SMs.
"""
import math
from functools import partial

import torch

from mibcore.kernels.aot import meta, meta_rng

SMS = 132
HBM_BYTES_PER_S = 4.8e12
FLOPS_PER_S = {torch.bfloat16: 990e12, torch.float16: 990e12, torch.float32: 67e12, torch.float64: 67e12}
TF32_FLOPS_PER_S = 495e12


def _cases():
    """(op, shape label, dtype, pass, call, bytes, flops) rows."""
    from mibcore.kernels import dropout, low_rank_fusion, reparameterize_kl, tensor_fusion

    for rows, cols in ((32, 50), (4096, 1024)):
        for dtype in (torch.float32, torch.bfloat16):
            e, n = dtype.itemsize, rows * cols
            x = meta(rows, cols, dtype=dtype)
            label = f"{rows}x{cols}"
            yield ("reparameterize_kl", label, dtype, "forward",
                   partial(reparameterize_kl.forward, x, x, meta_rng(), 0, -5.0, True), 3 * e * n + 4 * rows, 0)
            yield ("reparameterize_kl", label, dtype, "backward",
                   partial(reparameterize_kl.backward, x, meta(rows), x, x, meta_rng(), 0, -5.0, True),
                   5 * e * n + 4 * rows, 0)
    for batch, dims, out, p in ((32, (50, 50, 50), 50, 0.5), (64, (64, 64, 64), 128, 0.0),
                                (256, (32, 32, 32), 64, 0.5)):
        n = math.prod(d + 1 for d in dims)
        for dtype in (torch.float32, torch.bfloat16):
            e = dtype.itemsize
            inputs = [meta(batch, d, dtype=dtype) for d in dims]
            weight = meta(out, n, dtype=dtype)
            label = f"B{batch} {'x'.join(map(str, dims))}->{out}" + (f" p={p}" if p else "")
            small = e * (batch * sum(dims) + batch * out)
            yield ("tensor_fusion", label, dtype, "forward",
                   partial(tensor_fusion.forward, inputs, weight, None, p, meta_rng()), e * out * n + small,
                   2 * batch * n * out)
            yield ("tensor_fusion", label, dtype, "backward",
                   partial(tensor_fusion.backward, meta(batch, out, dtype=dtype), inputs, weight, p, meta_rng()),
                   2 * e * out * n + 2 * small, 4 * batch * n * out)
    for batch, dims, out, rank in ((32, (50, 50, 50), 50, 5), (512, (128, 128, 128), 128, 8)):
        dtype = torch.float32
        inputs = [meta(batch, d) for d in dims]
        factors = [meta(rank, d + 1, out) for d in dims]
        w, b = meta(1, rank), meta(1, out)
        factor_bytes = 4 * rank * out * sum(d + 1 for d in dims)
        io = 4 * batch * (sum(dims) + out)
        flops = 2 * batch * rank * out * sum(d + 1 for d in dims)
        label = f"B{batch} {'x'.join(map(str, dims))}->{out} r{rank}"
        yield ("low_rank_fusion", label, dtype, "forward",
               partial(low_rank_fusion.forward, inputs, factors, w, b), factor_bytes + io, flops)
        yield ("low_rank_fusion", label, dtype, "backward",
               partial(low_rank_fusion.backward, meta(batch, out), inputs, factors, w),
               2 * factor_bytes + 2 * io, 3 * flops)  # recomputed projections + two gradient GEMMs
    x = meta(4096, 1024)
    yield ("dropout", "4096x1024", torch.float32, "forward", partial(dropout.dropout, x, 0.1, meta_rng()),
           2 * 4 * x.numel(), 0)


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
