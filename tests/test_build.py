"""Build checks that need no GPU: the Triton kernels compile ahead of time for sm_90, and
the standalone C++ unit tests (csrc/tests) pass. The nvcc compile check of csrc/cuda runs in
.ci/run through CMake (it takes a while and needs nvcc)."""
import os
import platform
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-m", "mibcore.kernels.aot", "--arch", "90", "--dtype", "fp32", "--dtype", "bf16",
         "--parameterization", "0"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("sm_90")]
    # reparameterize_kl: 2 dtypes x (sample, no sample) x (forward, backward);
    # tensor_fusion: 2 dtypes x (dropout, none) x (forward, grad weight, grad input);
    # low_rank_fusion: 2 dtypes x (forward, backward)
    assert len(lines) == 8 + 12 + 4
    assert all("cubin 0 bytes" not in line for line in lines)


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler")
def test_cpp_unit_tests(tmp_path):
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", ROOT, "-B", str(build), "-DMIBCORE_CUDA_CHECK=OFF"], check=True, capture_output=True)
    targets = ["test_math"] + (["test_math_baseline"] if platform.machine() in ("x86_64", "AMD64") else [])
    for target in targets:  # native -march (AVX-512 here), and baseline x86-64 for the generic fallbacks
        subprocess.run(["cmake", "--build", str(build), "--target", target], check=True, capture_output=True)
        out = subprocess.run([str(build / target)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout
        assert "all C++ math tests passed" in out.stdout
