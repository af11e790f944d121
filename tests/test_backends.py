"""Backend selection: use/set/env/auto, and clear errors instead of silent fallbacks."""
import os
import re
import subprocess
import sys

import pytest
import torch

import mibcore
from mibcore import backends
from mibcore import functional as MF
from mibcore.ops import SPECS


def test_reference_always_available():
    assert "reference" in backends.available("cpu")
    assert "cuda" not in backends.available("cpu")


def test_auto_prefers_the_compiled_cpu_backend():
    expected = "cpu" if "cpu" in backends.available("cpu") else "reference"
    for op in SPECS:
        assert backends.resolve(op, "cpu") == expected


def test_auto_runs_triton_for_tensor_fusion_on_gpus(monkeypatch):
    # As on a GPU machine where both GPU backends serve CUDA tensors.
    from mibcore.ops._spec import Implementation

    monkeypatch.setattr(backends, "_device_present", lambda device_type: True)
    for name in ("cuda", "triton"):
        monkeypatch.setitem(backends.BACKENDS, name, backends.Backend(name, "", lambda: True))
    for spec in SPECS.values():
        if "triton" in spec.implementations:
            monkeypatch.setitem(spec.implementations, "triton", Implementation(("cuda",), op=spec.implementations["triton"].op))
    backends.clear_cache()
    assert backends.resolve("tensor_fusion", "cuda") == "triton"  # tensor cores (ops/tensor_fusion.py AUTO_ORDER)
    assert backends.resolve("reparameterize_kl", "cuda") == "cuda"  # the default order
    assert backends.resolve("low_rank_fusion", "cuda") == "triton"  # no CUDA kernel


def test_use_is_scoped_and_overrides_set():
    backends.set("reference")
    assert backends.current() == "reference"
    with backends.use("cpu"):
        assert backends.current() == "cpu"
        with backends.use("reference"):
            assert backends.current() == "reference"
        assert backends.current() == "cpu"
    assert backends.current() == "reference"


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("MIBCORE_BACKEND", "reference")
    backends.clear_cache()  # (the variable is read once)
    assert backends.resolve("reparameterize_kl", "cpu") == "reference"
    monkeypatch.setenv("MIBCORE_BACKEND", "bogus")
    backends.clear_cache()
    with pytest.raises(backends.BackendError, match="MIBCORE_BACKEND: unknown backend 'bogus'"):
        backends.current()


def test_unknown_backend_is_an_error():
    with pytest.raises(backends.BackendError, match="unknown backend 'fast'"):
        backends.set("fast")
    with pytest.raises(backends.BackendError, match="unknown backend"):
        with backends.use("fast"):
            pass


def test_backend_that_cannot_serve_the_device_is_an_error():
    with backends.use("cuda"), pytest.raises(backends.BackendError, match="cannot run reparameterize_kl on cpu"):
        MF.reparameterize_kl(torch.zeros(2, 3), torch.zeros(2, 3))


def test_backend_without_the_operator_is_an_error_not_a_fallback(monkeypatch):
    # Removing the one declaration (the spec in ops/tensor_fusion.py) is all it takes.
    monkeypatch.delitem(SPECS["tensor_fusion"].implementations, "cpu")
    backends.clear_cache()
    assert "tensor_fusion" not in backends.BACKENDS["cpu"].ops
    with backends.use("cpu"), pytest.raises(backends.BackendError, match="does not implement tensor_fusion"):
        MF.tensor_fusion([torch.zeros(2, 3), torch.zeros(2, 3)], torch.zeros(1, 16))


def test_the_registry_is_derived_from_the_operator_modules():
    for op, spec in SPECS.items():
        assert op in backends.BACKENDS["reference"].ops
        for name, implementation in spec.implementations.items():
            assert op in backends.BACKENDS[name].ops
            assert name == "reference" or implementation.op.startswith("mibcore::")
    assert "low_rank_fusion" not in backends.BACKENDS["cuda"].ops  # no CUDA kernel declared


@pytest.mark.skipif("cpu" not in backends.available("cpu"), reason="needs the cpu backend")
def test_every_declared_cpp_operator_has_a_kernel_and_autograd():
    for spec in SPECS.values():
        if "cpu" in spec.implementations:
            name = spec.implementations["cpu"].op
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), name
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd"), name


@pytest.mark.gpu
def test_generator_on_the_wrong_device_is_an_error():
    with backends.use("cpu"), pytest.raises(ValueError, match="generator is on cuda"):
        MF.reparameterize_kl(torch.zeros(2, 3), torch.zeros(2, 3), generator=torch.Generator("cuda"))


def test_info_command():
    out = subprocess.run(
        [sys.executable, "-m", "mibcore", "info"], capture_output=True, text=True, check=True
    ).stdout
    assert f"mibcore {mibcore.__version__}" in out
    assert f"torch {torch.__version__}" in out
    assert re.search(r"^  cpu: (cpu > )?reference  \(.*tensor_fusion", out, re.M)
    assert "extension mibcore._C:" in out


def test_a_required_backend_that_is_missing_fails_the_run(tmp_path):
    # What .ci/run relies on: with the extension hidden, requiring the cpu backend fails the
    # test run at once instead of running a suite shrunk to the reference backend.
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    env = {**os.environ, "MIBCORE_DISABLE_EXTENSION": "1", "MIBCORE_REQUIRE_BACKENDS": "cpu,triton"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", root,
         "-c", os.path.join(root, "pyproject.toml"), "--confcutdir", root, str(tmp_path / "test_nothing.py"),
         "-p", "tests.conftest"],
        capture_output=True, text=True, cwd=root, env=env, timeout=300,
    )
    assert out.returncode != 0
    assert "MIBCORE_REQUIRE_BACKENDS names backends that are not available here: cpu" in out.stdout + out.stderr
