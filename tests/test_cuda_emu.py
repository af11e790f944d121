"""The planted-bug check of cuda-emu (DESIGN.md 1 (e); `make cuda-emu` itself runs in `make test`).

csrc/cuda_emu/mutations.sh applies four bugs to copies of csrc/cuda (a removed __syncthreads(), a
bound off by one, a shortened warp reduction, a wrong block index term), builds each the cuda-emu
way (g++ with ASan and UBSan, reusing build-cuda-emu's unmutated objects) and requires cuda-emu to
fail on every one and to pass on the unmutated sources: the emulation must be able to see a
barrier, a bound, a reduction and an index go wrong, or its passing says nothing.
About 30 s on 2 cores with build-cuda-emu already built (make test builds it first).
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cuda_emu_fails_on_each_planted_bug():
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: cuda-emu cannot be built")
    run = subprocess.run(["bash", os.path.join(ROOT, "csrc", "cuda_emu", "mutations.sh")], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "0 mismatches: OK" in run.stdout, report  # the unmutated sources pass
    assert run.stdout.count("cuda-emu-mutations: caught") == 4, report
