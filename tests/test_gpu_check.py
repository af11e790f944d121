"""The prepared device check (.ci/gpu_check.sh, `make gpu-check`) and what it times.

Without a GPU the script checks that what it needs is in place and ends with a "no GPU"
message and exit code 0; on a GPU machine it is the device check itself (not run from here)."""
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import cases as bench_cases
from mibcore import reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, ".ci", "gpu_check.sh")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script is the whole device check")
def test_gpu_check_without_a_gpu_passes_its_preflight_and_says_so(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    out = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[preflight] ok" in out.stdout
    assert "gpu-check: no GPU here" in out.stdout.splitlines()[-1]
    assert {"summary.txt", "preflight.log"} <= set(os.listdir(tmp_path))


def test_tensor_fusion_is_also_timed_against_cublas_on_gpus():
    case = next(c for c in bench_cases.all_cases(quick=True) if c.op == "tensor_fusion")
    assert "cublas" in bench_cases.providers(case, "cuda")
    assert "cublas" not in bench_cases.providers(case, "cpu")
    # The provider's work is the fused op's GEMM on the materialized product (no dropout).
    torch.manual_seed(0)
    fn, (fused, weight, bias) = case.make("cpu", "cublas")
    torch.manual_seed(0)
    _, tensors = case.make("cpu", "reference")
    *xs, w, b = tensors
    torch.testing.assert_close(fused, reference.outer_product(xs).detach())
    assert fused.requires_grad and fn(fused, weight, bias).shape == (xs[0].shape[0], weight.shape[0])
