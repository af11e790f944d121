"""Ahead-of-time compilation of every Triton launch the host code makes, without a GPU.

The launches are not listed by hand: `record_calls` drives the host wrappers (mibcore/kernels/*.py)
with meta tensors through the launch table of every operator's spec (mibcore/ops/<op>.py) under
mibcore/kernels/_launch.recording(), which records each launch instead of running it. Each distinct
specialization (Triton's own binder decides what is distinct: argument dtypes, 32/64-bit
integers, alignment, constexprs) is compiled once per target, in parallel processes, and
checked: it compiles, its shared memory fits a block (sm_90: 227 KB, sm_80: 163 KB), and it
has no local memory or stack (register spills), read from the cubin with the cuobjdump that
Triton ships.

  python -m mibcore.kernels.aot                 representative set (CI): one launch per
                                                kernel x dtype x tile-size class, sm_90 and sm_80
  python -m mibcore.kernels.aot --full          every distinct launch (`make aot-sweep`)

Must run without TRITON_INTERPRET=1 (interpreted kernels cannot be compiled).
"""
import argparse
import concurrent.futures
import dataclasses
import importlib
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

from mibcore.kernels import _launch

SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024}  # bytes of shared memory per block (opt-in maximum)


def calls():
    """(label, [host calls]) for every row of the operators' launch tables (OpSpec.launches: the
    paper's shapes, the benchmarks' scale shapes, modality dims up to 600, 2 and 3 inputs, every
    dtype, with and without dropout, every parameterization, forward and backward)."""
    from mibcore.ops import SPECS

    for spec in SPECS.values():
        for launch in spec.launches():
            yield f"{spec.name} {launch.label} {launch.dtype}", [call for _, call, _, _ in launch.passes]


def record_calls(table=None):
    """[(label, Launch)] for every launch the host code makes for the table's calls."""
    recorded = []
    for label, fns in table if table is not None else calls():
        for fn in fns:
            with _launch.recording() as launches:
                fn()
            recorded += [(label, launch) for launch in launches]
    return recorded


# ---------------------------------------------------------------- specializations and compiling


@dataclasses.dataclass
class Specialization:
    """One compile job: what Triton's launcher would compile for a launch."""

    module: str
    kernel: str
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict  # num_warps, num_stages where the host code sets them
    label: str  # the first call that launches it

    def key(self):
        return (self.module, self.kernel, tuple(self.signature.items()), tuple(sorted(self.constexprs.items())),
                repr(sorted(self.attrs.items())), tuple(sorted(self.options.items())))

    def tile_class(self):
        """kernel x pointer dtypes x tile sizes (constexprs named BLOCK*) x dot precision (IEEE, TF32)
        x warps."""
        pointers = tuple(v for v in self.signature.values() if v.startswith("*"))
        blocks = tuple(sorted((k, v) for k, v in self.constexprs.items()
                              if "BLOCK" in str(self._name(k)) or self._name(k) == "PRECISION"))
        return self.module, self.kernel, pointers, blocks, tuple(sorted(self.options.items()))

    def _name(self, path):
        return list(self.signature)[path[0]]

    def describe(self):
        named = {self._name(k): v for k, v in self.constexprs.items()}
        return f"{self.kernel} {named} {self.options or ''} [{self.label}]"


def specialize(launch, label, arch=90):
    """The Specialization that Triton's JIT would compile for `launch` on sm_<arch>."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    if not hasattr(kernel, "params"):
        raise RuntimeError("unset TRITON_INTERPRET: interpreted kernels cannot be compiled ahead of time")
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = dict(launch.constexprs)
    options = {k: kwargs.pop(k) for k in _LAUNCH_OPTIONS if k in kwargs}
    bound, specialization, _ = binder(*launch.args, **kwargs)
    _, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, {})
    return Specialization(kernel.fn.__module__, kernel.fn.__name__, signature, constexprs, attrs, options, label)


_LAUNCH_OPTIONS = ("num_warps", "num_stages")


def distinct_specializations(recorded, representative=False):
    """Distinct Specializations of the recorded launches (one per tile class if `representative`,
    preferring the one with the most features switched on: dropout, sampling)."""
    unique = {}
    for label, launch in recorded:
        spec = specialize(launch, label)
        unique.setdefault(spec.key(), spec)
    specs = list(unique.values())
    if not representative:
        return specs
    chosen = {}
    weight = lambda s: sum(1 for v in s.constexprs.values() if v is True)  # noqa: E731
    for spec in specs:
        cls = spec.tile_class()
        if cls not in chosen or weight(spec) > weight(chosen[cls]):
            chosen[cls] = spec
    return list(chosen.values())


def cuobjdump():
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def compile_one(spec, arch):
    """Compiles `spec` for sm_<arch>; returns a dict of its resources and the checks' verdicts."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(spec.module), spec.kernel)
    result = {"arch": arch, "kernel": spec.describe(), "ok": False}
    start = time.perf_counter()
    try:
        compiled = triton.compile(ASTSource(kernel, spec.signature, spec.constexprs, spec.attrs),
                                  target=GPUTarget("cuda", arch, 32), options=spec.options)
    except Exception as error:  # noqa: BLE001 (reported, not hidden: the check fails)
        result.update(error=f"{type(error).__name__}: {str(error)[-600:]}", seconds=time.perf_counter() - start)
        return result
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump(), "-res-usage", f.name], capture_output=True, text=True).stdout
    match = _USAGE.search(usage)
    regs, stack, static_shared, local = map(int, match.groups()) if match else (-1, -1, 0, -1)
    shared = compiled.metadata.shared + static_shared
    result.update(regs=regs, stack=stack, local=local, shared=shared, seconds=time.perf_counter() - start,
                  fits=shared <= SHARED_LIMIT[arch], no_spills=stack == 0 and local == 0)
    result["ok"] = result["fits"] and result["no_spills"]
    return result


def _compile_job(job):
    return compile_one(*job)


def compile_all(specs, archs=(90, 80), jobs=None, report=None):
    """Compiles every spec for every arch, in `jobs` processes; returns the result dicts (in
    completion order). `report(result)` is called as each one completes, so that a long sweep
    cut short has printed what it compiled."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: interpreted kernels cannot be compiled ahead of time")
    work = [(spec, arch) for arch in archs for spec in specs]
    jobs = jobs or min(len(work), os.cpu_count() or 1)
    report = report or (lambda result: None)
    results = []
    if jobs <= 1:
        for job in work:
            results.append(_compile_job(job))
            report(results[-1])
        return results
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in concurrent.futures.as_completed([pool.submit(_compile_job, job) for job in work]):
            results.append(future.result())
            report(results[-1])
    return results


def summarize(results, archs):
    lines = []
    for arch in archs:
        mine = [r for r in results if r["arch"] == arch]
        compiled = [r for r in mine if "error" not in r]
        lines.append(
            f"sm_{arch}: {len(mine)} launches, {len(compiled)} compile, {sum(r['fits'] for r in compiled)} fit in "
            f"{SHARED_LIMIT[arch] // 1024} KB shared, {sum(r['no_spills'] for r in compiled)} without spills; "
            f"max {max((r['regs'] for r in compiled), default=0)} registers, "
            f"max {max((r['shared'] for r in compiled), default=0) // 1024} KB shared")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT), help="(repeatable)")
    parser.add_argument("--full", action="store_true", help="every distinct launch, not one per tile class")
    parser.add_argument("--jobs", type=int, default=0, help="compile processes (default: the CPU count)")
    parser.add_argument("--verbose", action="store_true", help="one line per compiled launch")
    parser.add_argument("--only", action="append", help="only calls whose label contains this (repeatable)")
    args = parser.parse_args(argv)
    archs = tuple(args.arch or (90, 80))
    start = time.perf_counter()
    table = [(label, fns) for label, fns in calls() if not args.only or any(o in label for o in args.only)]
    recorded = record_calls(table)
    specs = distinct_specializations(recorded, representative=not args.full)
    print(f"{len(recorded)} launches recorded, {len(specs)} distinct {'' if args.full else 'representative '}"
          f"specializations ({time.perf_counter() - start:.1f} s)", flush=True)

    def report(r):
        if args.verbose or not r["ok"]:
            detail = r.get("error") or (f"regs {r['regs']} stack {r['stack']} local {r['local']} "
                                        f"shared {r['shared']} B")
            print(f"{'OK' if r['ok'] else 'FAIL'} sm_{r['arch']} {r['kernel']}: {detail}", flush=True)

    results = compile_all(specs, archs, args.jobs or None, report)
    failures = [r for r in results if not r["ok"]]
    for line in summarize(results, archs):
        print(line)
    print(f"total {time.perf_counter() - start:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
