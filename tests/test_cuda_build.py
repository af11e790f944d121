"""Checks of the CUDA sources that need no GPU (DESIGN.md 1: compiled, not yet run, until a GPU runs them).

- Resources: nvcc --resource-usage on every csrc/cuda/*.cu for sm_80 and sm_90 (the flags of
  setup.py); every kernel has a 0-byte stack frame, no spill stores or loads and no local memory.
- Launch and indexing rules, read from the sources: 1-D grids sized by launch.h's grid_for (grid.y
  and grid.z stop at 65535), 64-bit indices from blockIdx / gridDim, torch's non-determinism
  alert wherever a kernel accumulates with float atomics, one torch-dtype mapping.

nvcc missing: skipped, unless MIBCORE_REQUIRE_CUDA_CHECKS=1 (.ci/run), then failed.
`python -m tests.test_cuda_build` prints the resource table (registers, shared memory, spills).
"""
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from mibcore import _math_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join(ROOT, "csrc", "cuda")
CU_FILES = sorted(glob.glob(os.path.join(CUDA_DIR, "*.cu")))
ARCHS = ("80", "90")
# setup.py's nvcc flags (less the gencodes, added per ARCHS).
NVCC_FLAGS = ["-O3", "-std=c++20", "--expt-relaxed-constexpr"]


def _nvcc():
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        if os.environ.get("MIBCORE_REQUIRE_CUDA_CHECKS") == "1":
            pytest.fail("nvcc not found but MIBCORE_REQUIRE_CUDA_CHECKS=1: the CUDA resource check cannot run")
        pytest.skip("nvcc not found")
    return nvcc


_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for 'sm_(?P<arch>\d+)'")
_FRAME = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
_USED = re.compile(r"Used (?P<regs>\d+) registers(?P<rest>.*)")


def parse_resource_usage(text):
    """{(kernel, arch): {regs, stack, spill_stores, spill_loads, smem, lmem}} from ptxas's report."""
    kernels, current = {}, None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = (m["name"], m["arch"])
            kernels[current] = {"regs": None, "stack": None, "spill_stores": None, "spill_loads": None,
                                "smem": 0, "lmem": 0}
        elif current and (m := _FRAME.search(line)):
            kernels[current].update(stack=int(m["stack"]), spill_stores=int(m["stores"]), spill_loads=int(m["loads"]))
        elif current and (m := _USED.search(line)):
            kernels[current]["regs"] = int(m["regs"])
            for amount, kind in re.findall(r"(\d+) bytes (smem|lmem)", m["rest"]):
                kernels[current][kind] = int(amount)
    return kernels


def _compile(nvcc, cu, outdir):
    gencodes = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    obj = os.path.join(outdir, os.path.basename(cu) + ".o")
    cmd = [nvcc, "--resource-usage", *NVCC_FLAGS, *gencodes, "-I", os.path.join(ROOT, "csrc", "include"),
           "-I", os.path.join(outdir, "generated"), "-I", CUDA_DIR, "-c", cu, "-o", obj]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return cu, out


def resource_usage(nvcc, outdir=None):
    """{file name: parsed report} for every csrc/cuda/*.cu, compiled in parallel (one per core);
    the objects stay in `outdir` when given (FILE.cu.o)."""
    with tempfile.TemporaryDirectory() as scratch, concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        outdir = outdir or scratch
        _math_tables.write_header(os.path.join(outdir, "generated"))  # mibcore/math_tables.h, as the builds make it
        results = list(pool.map(lambda cu: _compile(nvcc, cu, outdir), CU_FILES))
    reports = {}
    for cu, out in results:
        assert out.returncode == 0, f"{os.path.basename(cu)} failed to compile:\n{out.stderr[-3000:]}"
        reports[os.path.basename(cu)] = parse_resource_usage(out.stdout + out.stderr)
    return reports


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    outdir = str(tmp_path_factory.mktemp("cuda-objects"))
    return outdir, resource_usage(_nvcc(), outdir)


@pytest.fixture(scope="module")
def reports(objects):
    return objects[1]


def test_every_kernel_is_compiled_for_sm80_and_sm90(reports):
    assert set(reports) == {os.path.basename(cu) for cu in CU_FILES}
    for name, kernels in reports.items():
        assert kernels, f"{name}: no kernels in ptxas's report"
        for arch in ARCHS:
            assert {k for k, a in kernels if a == arch} == {k for k, _ in kernels}, f"{name}: sm_{arch} lacks kernels"


def test_no_kernel_spills_or_uses_local_memory(reports):
    bad = [
        f"{name}: {kernel} sm_{arch}: {usage}"
        for name, kernels in reports.items()
        for (kernel, arch), usage in kernels.items()
        if usage["stack"] != 0 or usage["spill_stores"] != 0 or usage["spill_loads"] != 0 or usage["lmem"] != 0
    ]
    assert not bad, "kernels with a stack frame, spills or local memory:\n" + "\n".join(bad)


def test_resource_report_parser():
    text = (
        "ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z1kv\n"
        "    8 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 64 registers, used 1 barriers, 2176 bytes smem, 488 bytes cmem[0]\n"
    )
    assert parse_resource_usage(text) == {("_Z1kv", "90"): {
        "regs": 64, "stack": 8, "spill_stores": 16, "spill_loads": 12, "smem": 2176, "lmem": 0}}


def test_tensor_fusion_forward_main_loops_are_mostly_multiply_adds(objects):
    """The forward's main loop on sm_90 (benchmarks/cuda_sass.py: the loop of a backward branch
    holding the most FFMA/DFMA/HMMA, counted statically): FFMA / DFMA >= 50% of its instructions
    for fp32 / fp64. fp16/bf16 run on tensor cores (HMMA in the loop); their share stays low
    because at out <= 64 each HMMA consumes 16 x 16 outer-product elements that the same loop
    generates (3 loads, 3 products and the keep bit each) and 16 x 16 weights it stages."""
    from benchmarks import cuda_sass

    obj = os.path.join(objects[0], "tensor_fusion_kernels.cu.o")
    loops = {family: loop for family, _, loop in cuda_sass.report(obj, "forward", arch="90")}
    assert loops["forward_fma_kernel fp32"]["opcodes"].get("FFMA", 0) >= 512
    assert loops["forward_fma_kernel fp32"]["share"] >= 0.5, loops["forward_fma_kernel fp32"]
    assert loops["forward_fma_kernel fp64"]["opcodes"].get("DFMA", 0) >= 512
    assert loops["forward_fma_kernel fp64"]["share"] >= 0.5, loops["forward_fma_kernel fp64"]
    for dtype in ("fp16", "bf16"):
        loop = loops[f"forward_mma_kernel {dtype}"]
        assert loop["opcodes"].get("HMMA", 0) >= 16 and "FFMA" not in loop["opcodes"], loop


# ---------------------------------------------------------------- rules read from the sources
def _source(path):
    with open(path) as f:
        return re.sub(r"//[^\n]*", "", f.read())  # code only: comments may name what the code avoids


CUDA_SOURCES = {os.path.basename(p): _source(p) for p in CU_FILES}
HOST_SOURCES = {os.path.basename(p): _source(p) for p in sorted(glob.glob(os.path.join(CUDA_DIR, "*_cuda.cpp")))}


@pytest.mark.parametrize("name", sorted(CUDA_SOURCES))
def test_grids_are_one_dimensional_and_sized_by_grid_for(name):
    code = CUDA_SOURCES[name]
    assert not re.search(r"\b(blockIdx|gridDim)\.[yz]\b", code), f"{name}: grid.y/z are capped at 65535"
    launches = re.findall(r"<<<\s*([^,]+),", code)
    assert launches, f"{name}: no launch found"
    assert all(grid.strip() == "grid" for grid in launches), f"{name}: launch grids {launches}, expected `grid`"
    assert "grid_for(" in code, f"{name}: grids come from launch.h's grid_for"


@pytest.mark.parametrize("name", sorted(CUDA_SOURCES))
def test_indices_from_the_grid_are_64_bit(name):
    lines = [line for line in CUDA_SOURCES[name].splitlines() if re.search(r"\b(blockIdx|gridDim)\.x\b", line)]
    assert lines, f"{name}: no kernel reads blockIdx"
    bad = [line.strip() for line in lines if "int64_t" not in line]
    assert not bad, f"{name}: blockIdx / gridDim used in 32-bit arithmetic: {bad}"


def test_float_atomics_raise_the_non_determinism_alert():
    for name, code in CUDA_SOURCES.items():
        if "atomicAdd" in code:
            host = name.replace("_kernels.cu", "_cuda.cpp")
            assert "alertNotDeterministic" in HOST_SOURCES[host], f"{host}: {name} accumulates with atomics"


def test_one_torch_dtype_mapping():
    assert HOST_SOURCES
    for name, code in HOST_SOURCES.items():
        assert '#include "torch_dtype.h"' in code and "DType::kFloat32" not in code, name


def test_reparameterize_kl_draws_one_philox_block_per_thread():
    code = CUDA_SOURCES["reparameterize_kl_kernels.cu"]
    assert "normal_block(" in code and "normal_at(" not in code
    assert "load4(" in code and "store4(" in code


def _kernel_family(mangled):
    """The kernel's name without template arguments: _ZN...14forward_kernelI... -> forward_kernel."""
    m = re.search(r"_cu_[0-9a-f]{8}(\d+)", mangled)  # after the anonymous namespace of the .cu file
    if not m:
        return mangled
    rest = mangled[m.start(1):]
    n = int(re.match(r"\d+", rest).group())
    digits = len(str(n))
    return rest[digits:digits + n]


def main():
    """Prints, per file, kernel and arch: instantiations, registers (min-max), shared memory, and the
    largest stack frame / spill stores / spill loads (all must be 0)."""
    reports = resource_usage(shutil.which("nvcc") or "nvcc")
    print("| file | kernel | arch | instantiations | registers | smem bytes | stack / spill st / spill ld (max) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, kernels in reports.items():
        groups = {}
        for (kernel, arch), usage in kernels.items():
            groups.setdefault((_kernel_family(kernel), arch), []).append(usage)
        for (family, arch), usages in sorted(groups.items()):
            regs = [u["regs"] for u in usages]
            worst = [max(u[k] for u in usages) for k in ("stack", "spill_stores", "spill_loads")]
            print(f"| {name} | {family} | sm_{arch} | {len(usages)} | {min(regs)}-{max(regs)} | "
                  f"{max(u['smem'] for u in usages)} | {' / '.join(map(str, worst))} |")


if __name__ == "__main__":
    main()
