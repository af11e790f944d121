"""`python -m benchmarks.graph_step`: a C-MIB training step at the paper's shapes (tensor fusion,
B 32, T 50, all dropouts, fused Adam) on a GPU, per backend, eager and captured in one CUDA graph
as `train --cuda-graphs` runs it (mibcore.train.cuda_graphs.GraphedStep around the engine's own
EagerStep), against the paper's formulation. Median ms per step over `--repeats` windows of
`--steps` steps, timed with CUDA events; one table row per (backend, mode). With `--device cpu`
the eager rows only (a CUDA graph needs CUDA): how the script is tested without a GPU."""
import argparse
import statistics
import sys
import time

import torch

import mibcore
from mibcore import models
from mibcore.train.config import TrainConfig
from mibcore.train.cuda_graphs import GraphedStep
from mibcore.train.optimizer import make_optimizer
from mibcore.train.step import EagerStep

from .cases import _paper_batch, make_trainer


def _mibcore_step(fusion, device, graphs):
    torch.manual_seed(0)
    config = TrainConfig(model="cmib", fusion=fusion, mode="faithful", lr=2e-5, cuda_graphs=graphs)
    model = models.build("cmib", fusion=fusion, mode="faithful").to(device).train()
    optimizer = make_optimizer(config, model)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    step = EagerStep(model, model, optimizer, scaler, config, device)
    return GraphedStep(step, device) if graphs else step


def _time(step, batch, device, steps, repeats, warmup):
    for _ in range(warmup):  # (for a graphed step: its side-stream steps and the capture)
        step(*batch)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            start = time.perf_counter()
        for _ in range(steps):
            step(*batch)
        if device.type == "cuda":
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / steps)
        else:
            times.append((time.perf_counter() - start) * 1e3 / steps)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.graph_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fusion", default="tensor")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows (the median is reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (a graph's capture among them)")
    parser.add_argument("--backend", action="append", help="mibcore backends (default: every one serving the device)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks.graph_step: no CUDA device here (--device cpu times the eager steps)")
    batch = _paper_batch(device, 32, 50, torch.Generator().manual_seed(0))
    names = args.backend or [n for n, b in mibcore.backends.BACKENDS.items() if b.serves("tensor_fusion", device.type)]
    timing = dict(device=device, steps=args.steps, repeats=args.repeats, warmup=args.warmup)
    base = _time(make_trainer("paper", args.fusion, device, batch).step, batch, **timing)
    rows = [("paper", "eager", base, "")]
    for name in names:
        for graphs in (False, True) if device.type == "cuda" else (False,):
            with mibcore.backends.use(name):
                try:
                    step = _mibcore_step(args.fusion, device, graphs)
                    ms = _time(step, batch, **timing)
                    note = "capture failed: eager steps" if graphs and step.failed else ""
                except Exception as error:  # noqa: BLE001 - a failing backend is a row with its error
                    ms, note = float("nan"), f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
            rows.append((name, "cuda graph" if graphs else "eager", ms, note))
            print(f"{name:10s} {rows[-1][1]:10s} {ms:8.3f} ms {note}", flush=True)
    where = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\nC-MIB {args.fusion} training step, B32 T50, {where}")
    print("| backend | step | ms per step | x paper |\n| --- | --- | ---: | ---: |")
    for name, mode, ms, note in rows:
        print(f"| {name} | {mode} | {ms:.3f} | {base / ms:.2f} |{' ' + note if note else ''}")


if __name__ == "__main__":
    main()
