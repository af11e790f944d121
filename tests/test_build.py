"""Build checks that need no GPU: the Triton kernels compile ahead of time for sm_90 and sm_80, and
the standalone C++ unit tests (csrc/tests) pass. The nvcc compile check of csrc/cuda runs in
.ci/run through CMake (it takes a while and needs nvcc)."""
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

import mibcore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None, reason="triton not installed")
def test_triton_launches_compile_fit_and_do_not_spill():
    # The representative set (one launch per kernel x dtype x tile-size class of the launches the
    # host code makes for mibcore/kernels/aot.py's table) for sm_90 and sm_80; `make aot-sweep`: all of them.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "mibcore.kernels.aot", "--arch", "90", "--arch", "80"],
                         capture_output=True, text=True, env=env, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = [line for line in out.stdout.splitlines() if line.startswith("sm_")]
    assert len(summary) == 2, out.stdout[-3000:]
    for line in summary:
        match = re.match(r"sm_\d+: (\d+) launches, (\d+) compile, (\d+) fit in \d+ KB shared, (\d+) without spills",
                         line)
        assert match, line
        launches, *passed = map(int, match.groups())
        assert launches > 50 and passed == [launches] * 3, line


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler")
def test_cpp_unit_tests(tmp_path):
    # The math and lane tests built for every instruction-set level (each must compile), run for
    # each level this CPU supports (an AVX2 machine: baseline and avx2; AVX-512: all three).
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", ROOT, "-B", str(build), "-DMIBCORE_CUDA_CHECK=OFF"], check=True, capture_output=True)
    x86 = platform.machine() in ("x86_64", "AMD64")
    levels = ["baseline", "avx2", "avx512"] if x86 else ["baseline"]
    for level in levels:
        subprocess.run(["cmake", "--build", str(build), "--target", f"test_math_{level}"], check=True, capture_output=True)
    runnable = mibcore.cpu_isa.available() if mibcore._extension.available() else ["baseline"]
    assert runnable[0] == "baseline" and (not x86 or "avx2" in runnable or "avx2" not in _cpu_flags())
    for level in runnable:
        out = subprocess.run([str(build / f"test_math_{level}")], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout
        assert f"all C++ math tests passed (level {levels.index(level)})" in out.stdout, out.stdout


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])


def test_installed_package_leaves_out_the_benchmarks_pytest_module(tmp_path):
    # setup.py installs benchmarks/ as mibcore.benchmarks, without its pytest-benchmark module
    env = {**os.environ, "MIBCORE_SKIP_EXTENSION": "1"}
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    installed = set(os.listdir(tmp_path / "mibcore" / "benchmarks"))
    assert {"__init__.py", "cases.py", "measure.py"} <= installed
    assert not [name for name in installed if name.startswith("test_")], installed
    assert os.path.isfile(os.path.join(ROOT, "benchmarks", "test_bench_cases.py"))  # (still in the checkout)


def test_the_package_requires_the_torch_minor_version_it_was_compiled_against(tmp_path):
    import torch

    env = {**os.environ, "MIBCORE_SKIP_EXTENSION": "1"}
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    requires = (next(tmp_path.glob("*.egg-info")) / "requires.txt").read_text().split("[")[0].split()
    version = ".".join(torch.__version__.split("+")[0].split(".")[:3])
    assert f"torch~={version}" in requires, requires
