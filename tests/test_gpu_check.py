"""The prepared device check (.ci/gpu_check.sh, `make gpu-check`) and what it times.

On a GPU machine the script is the device check itself (not run from here). Here its cheap part
runs as the device runs it: from a copy of the checkout as the device tool sends it (tracked files
and untracked ones git does not ignore; no editable install, no built extension), in rehearsal
mode, its preflight and the collection of the GPU tier (`make gpu-rehearsal` adds the CUDA build
on a replica of the device's software)."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from benchmarks import __main__ as bench_main
from benchmarks import cases as bench_cases
from mibcore import reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checkout_as_the_device_gets_it(dest):
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(source, os.path.join(dest, name))
    return dest


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script is the whole device check")
@pytest.mark.skipif(shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")),
                    reason="needs the git checkout")
def test_gpu_check_rehearsal_preflight_and_collection_from_a_plain_checkout(tmp_path):
    repo = _checkout_as_the_device_gets_it(str(tmp_path / "repo"))
    assert not os.path.exists(os.path.join(repo, "kernels")), "the Triton kernels are mibcore/kernels"
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env.update(PYTHON=sys.executable, OUT=str(out), MIBCORE_GPU_CHECK_STEPS="preflight collect")
    run = subprocess.run(["bash", os.path.join(repo, ".ci", "gpu_check.sh"), "--rehearsal"], cwd=repo,
                         capture_output=True, text=True, env=env, timeout=300)
    log = run.stdout + run.stderr + (out / "preflight.log").read_text()
    assert run.returncode == 0, log
    assert "[preflight] ok" in run.stdout and "[collect] ok" in run.stdout, log
    # mibcore.kernels comes from the copy itself, not from this checkout's editable install.
    assert f"mibcore and mibcore.kernels import from {os.path.realpath(repo)}" in log
    collected = next(line for line in run.stdout.splitlines() if line.startswith("collected GPU tests: "))
    gpu, smoke = int(collected.split()[3]), int(collected.split("smoke tier: ")[1].split(";")[0])
    assert gpu > smoke > 0, collected
    assert "triton" in collected.split("cases per backend: ")[1], collected
    assert "| smoke | 80 | not run (needs a GPU) |" in run.stdout
    assert {"summary.txt", "preflight.log"} <= set(os.listdir(out))


def test_the_step_caps_fit_the_budget():
    script = open(os.path.join(ROOT, ".ci", "gpu_check.sh")).read()
    steps = next(line for line in script.splitlines() if line.startswith("STEPS=("))
    caps = [int(s.split(":")[1]) for s in steps.removeprefix("STEPS=(").removesuffix(")").split()]
    budget = int(script.split("GPU_CHECK_BUDGET_S:-")[1].split("}")[0])
    assert sum(caps) <= budget <= 8 * 60 - 30  # 8 minutes of a device call, less its start


def test_the_benchmark_writes_each_row_and_survives_a_failing_provider(tmp_path, monkeypatch):
    written = []
    real_write = bench_main.atomic_write_text

    def write(path, text):
        if path.endswith("results.csv"):
            written.append(text.count("\n") - 1)  # rows in the file, header excluded
        real_write(path, text)

    original_cases, original_providers = bench_cases.all_cases, bench_cases.providers
    paper = [c for c in original_cases(quick=True) if c.op == "reparameterize_kl" and c.kind == "paper"]
    monkeypatch.setattr(bench_main, "atomic_write_text", write)
    # (the ceilings and the plot are not what is tested: skipped for speed)
    monkeypatch.setattr(bench_main.measure, "copy_bandwidth", lambda device: 1e10)
    monkeypatch.setattr(bench_main.measure, "gemm_throughput", lambda device: 1e11)
    monkeypatch.setattr(bench_main.report, "to_png", lambda rows, path: None)
    monkeypatch.setattr(bench_cases, "all_cases", lambda quick=False: paper)
    monkeypatch.setattr(bench_cases, "providers",
                        lambda case, device: ["no-such", *original_providers(case, device)[:1], "no-such"])
    rows = bench_main.run(bench_main_args(tmp_path))
    assert [r["provider"] for r in rows] == ["no-such", "reference", "no-such"]
    assert written == [1, 2, 3]  # the file after every row
    assert rows[1]["speedup_full"] == 1.0  # a failed provider is no baseline
    failed = [r for r in rows if r["provider"] == "no-such"]
    assert all(r["note"].startswith("error: BackendError") and r["full_ms"] is None for r in failed)
    assert "no-such" in (tmp_path / "results.csv").read_text()


def bench_main_args(out):
    import argparse

    from benchmarks import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--quick", "--device", "cpu", "--repeats", "1", "--out", str(out)])


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


def test_failures_are_printed_as_they_happen_for_the_device_check(monkeypatch, capsys):
    """The device check's steps can be cut off at their caps before pytest's summary: with
    MIBCORE_FAILURES_NOW=1 each failure's traceback is printed when its report arrives."""
    import types

    from tests import conftest

    report = types.SimpleNamespace(failed=True, nodeid="tests/x.py::test_y", when="call", longreprtext="E  boom")
    conftest.pytest_runtest_logreport(report)
    assert capsys.readouterr().out == ""  # off by default: pytest's own report is enough
    monkeypatch.setenv("MIBCORE_FAILURES_NOW", "1")
    conftest.pytest_runtest_logreport(report)
    assert "=== FAILED tests/x.py::test_y (call)\nE  boom" in capsys.readouterr().out
    conftest.pytest_runtest_logreport(types.SimpleNamespace(failed=False))
    assert capsys.readouterr().out == ""
