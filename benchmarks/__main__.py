"""Benchmark runner: `python -m benchmarks [--quick] [--device cpu] [--out bench-results]`
(`--launch-report`: the Triton launches against H200 floors, nothing timed; benchmarks/launch_report.py;
`--overhead`: the functional API's per-call cost over the torch operators; benchmarks/overhead.py;
`--step-ops`: the ops and predicted CUDA launches of a C-MIB training step; benchmarks/step_ops.py).

Times every case for every provider (forward, backward, forward+backward; training cases
also the whole step with Adam, or the epoch), reports speedups against the case's baseline
(its first provider) measured in the same run, the roofline fraction (copy bandwidth and GEMM
throughput measured in the same run) and memory, profiles each training step's components,
and writes results.csv, results.md, results.png (and breakdown.csv) to --out. results.csv is
rewritten (atomically) after every row, so that a run cut short keeps what it measured; a
provider that fails gets a row with its error in `note` and the run goes on (exit code 1 at
the end). `--list`: the providers each case would time on --device, nothing timed.
"""
import argparse
import os
import platform
import sys
import traceback

import torch

from mibcore._io import atomic_write_text
from mibcore._optional import available
from mibcore.errors import UsageError, storage_errors

from . import add_arguments, breakdown, measure, report
from . import cases as bench_cases


def _time_op(case, provider, device, repeats, bandwidth, gemm):
    fn, tensors = case.make(device, provider)
    times = measure.time_modes(fn, tensors, device, repeats)
    floor = case.bytes_moved / bandwidth if case.bytes_moved else case.flops / gemm
    peak = measure.peak_memory_bytes(fn, tensors, device)
    return {
        "op": case.op, "shape": case.shape, "kind": case.kind, "provider": provider, "device": device,
        "forward_ms": 1e3 * times["forward"], "backward_ms": 1e3 * times["backward"],
        "full_ms": 1e3 * times["full"],
        "roofline_full": floor / times["full"] if floor else None,
        "saved_MB": measure.saved_for_backward_bytes(fn, tensors) / 2**20,
        "peak_MB": None if peak is None else peak / 2**20,
    }


def _time_train(case, provider, device, repeats):
    """A training case's row (train_ms: the step, or the epoch), its trainer and batches."""
    trainer, batches = case.make(device, provider)
    split = case.op == "train_step"
    times = measure.time_train(trainer, batches, device, repeats if split else max(3, repeats // 2), split=split)
    row = {"op": case.op, "shape": case.shape, "kind": case.kind, "provider": provider, "device": device,
           "train_ms": 1e3 * times["train"], "note": trainer.note}
    for mode in ("forward", "backward", "full"):
        row[f"{mode}_ms"] = 1e3 * times[mode] if mode in times else None
    return row, trainer, batches


def run(args):
    device = args.device
    repeats = args.repeats or (5 if args.quick else 15)
    train_repeats = args.repeats or (5 if args.quick else 7)  # a step is 0.1-1 s: 7 medians take minutes
    bandwidth = measure.copy_bandwidth(device)
    gemm = measure.gemm_throughput(device)
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"device {device}; copy bandwidth {bandwidth / 1e9:.1f} GB/s, fp32 GEMM {gemm / 1e9:.0f} GFLOP/s"
    )
    print(machine, flush=True)
    plots = available("matplotlib")
    if not plots:
        print("note: results.png will not be written: matplotlib is not installed (pip install 'mibcore[bench]')",
              file=sys.stderr, flush=True)
    with storage_errors(args.out, "create the output folder"):  # (a read-only place: one line, exit 7)
        os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "results.csv")
    rows, breakdowns, errors = [], [], []
    for case in bench_cases.all_cases(quick=args.quick):
        if not _selected(case, args):
            continue
        baseline = None
        for provider in _providers(case, device, args):
            torch.manual_seed(0)
            try:
                if case.train:
                    row, trainer, batches = _time_train(case, provider, device, train_repeats)
                    if case.op == "train_step":
                        breakdowns.append({"shape": case.shape, "provider": provider,
                                           **breakdown.profile_step(trainer, next(iter(batches())))})
                else:
                    row = _time_op(case, provider, device, repeats, bandwidth, gemm)
            except Exception as error:  # a failing provider is a row with its error; the run goes on
                row = _error_row(case, provider, device, error)
                errors.append(row)
            if not row.get("error"):
                baseline = baseline or row  # the first provider is the case's baseline
            for mode in ("full", "forward", "train"):
                if row.get(f"{mode}_ms") and baseline and baseline.get(f"{mode}_ms"):
                    row[f"speedup_{mode}"] = baseline[f"{mode}_ms"] / row[f"{mode}_ms"]
            rows.append(row)
            atomic_write_text(csv_path, report.to_csv(rows))  # each row as soon as it is measured
            if row.get("error"):
                print(f"{case.op:18s} {case.shape:26s} {provider:17s} FAILED: {row['note']}", flush=True)
                continue
            roofline = row.get("roofline_full")
            print(
                f"{case.op:18s} {case.shape:26s} {provider:17s} fwd {row['forward_ms'] or 0:9.3f} ms  "
                f"fwd+bwd {row['full_ms'] or 0:9.3f} ms  x{row.get('speedup_full') or 0:.2f}"
                + (f"  roofline {100 * roofline:.0f}%" if roofline is not None else "")
                + (f"  train {row['train_ms']:9.3f} ms  x{row.get('speedup_train') or 0:.2f}" if case.train else "")
                + (f"  [{row['note']}]" if row.get("note") else ""),
                flush=True,
            )
    if breakdowns:
        atomic_write_text(os.path.join(args.out, "breakdown.csv"), report.breakdown_to_csv(breakdowns))
    markdown = report.to_markdown(rows, machine) + report.breakdown_to_markdown(breakdowns)
    if errors:
        markdown += "\n## Providers that failed\n\n" + "\n".join(
            f"- {r['op']} {r['shape']} {r['provider']}: {r['note']}" for r in errors) + "\n"
    atomic_write_text(os.path.join(args.out, "results.md"), markdown)
    try:
        if plots:
            report.to_png(rows, os.path.join(args.out, "results.png"))
    except Exception as error:  # (the plot is the least of the outputs)
        print(f"results.png not written: {type(error).__name__}: {error}", file=sys.stderr)
        plots = False
    print()
    print(markdown)
    print(f"wrote {args.out}/results.csv, results.md" + (", results.png" if plots else "")
          + (", breakdown.csv" if breakdowns else ""))
    if errors:
        print(f"{len(errors)} provider(s) FAILED: see the note column of results.csv", file=sys.stderr)
    return rows


def _error_row(case, provider, device, error):
    """The row of a provider that raised: no times, the error (its last frame) in `note`."""
    traceback.print_exc()
    frame = traceback.extract_tb(error.__traceback__)[-1:]
    where = f" ({os.path.basename(frame[0].filename)}:{frame[0].lineno})" if frame else ""
    message = " ".join(str(error).split())[:300]
    row = {column: None for column in report.COLUMNS}
    row.update(op=case.op, shape=case.shape, kind=case.kind, provider=provider, device=device, error=True,
               note=f"error: {type(error).__name__}: {message}{where}")
    return row


def check_selection(args):
    """UsageError where --op names no operator of the suite, or the options select no case."""
    cases = bench_cases.all_cases(quick=args.quick)
    unknown = sorted(set(args.op or ()) - {case.op for case in cases})
    if unknown:
        ops = sorted({case.op for case in cases if not (args.no_train and case.train)})
        raise UsageError(f"bench: unknown --op {', '.join(map(repr, unknown))}; the operators are: {', '.join(ops)}")
    if not any(_selected(case, args) for case in cases):
        raise UsageError(f"bench: no case is left to run: --op {' --op '.join(args.op)} with --no-train")


def _selected(case, args):
    return (not args.op or case.op in args.op) and not (args.no_train and case.train)


def _providers(case, device, args):
    return [p for p in bench_cases.providers(case, device) if p not in args.skip_provider]


def list_providers(args):
    """The providers each case would time on args.device (nothing is run)."""
    for case in bench_cases.all_cases(quick=args.quick):
        if _selected(case, args):
            print(f"{case.op:18s} {case.shape:26s} {' '.join(_providers(case, args.device, args))}")


def main(argv=None, args=None):
    """Runs the suite with a command line (argv), or with options parsed already (args: `mibcore bench`)."""
    parser = None
    if args is None:
        parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
        add_arguments(parser)
        args = parser.parse_args(argv)
    if args.launch_report:
        from . import launch_report

        print(launch_report.report(sass=args.sass))
        return 0
    if args.step_ops:
        from . import step_ops

        print(step_ops.report())
        return 0
    if args.overhead:
        from . import overhead

        print(overhead.report(args.device))
        return 0
    try:
        check_selection(args)
    except UsageError as e:
        if parser is None:  # (mibcore bench: the CLI prints it)
            raise
        parser.error(str(e))
    if args.list:
        list_providers(args)
        return 0
    rows = run(args)
    return 1 if any(row.get("error") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
