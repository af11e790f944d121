"""Backend selection: use/set/env/auto, and clear errors instead of silent fallbacks."""
import re
import subprocess
import sys

import pytest
import torch

import mibcore
from mibcore import backends
from mibcore import functional as MF


def test_reference_always_available():
    assert "reference" in backends.available("cpu")
    assert "cuda" not in backends.available("cpu")


def test_auto_prefers_the_compiled_cpu_backend():
    expected = "cpu" if "cpu" in backends.available("cpu") else "reference"
    for op in ("reparameterize_kl", "tensor_fusion", "low_rank_fusion"):
        assert backends.resolve(op, "cpu") == expected


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
    assert backends.resolve("reparameterize_kl", "cpu") == "reference"
    monkeypatch.setenv("MIBCORE_BACKEND", "bogus")
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
    limited = backends.Backend("cpu", frozenset({"reparameterize_kl"}), "test double")
    monkeypatch.setitem(backends.BACKENDS, "cpu", limited)
    with backends.use("cpu"), pytest.raises(backends.BackendError, match="does not implement tensor_fusion"):
        MF.tensor_fusion([torch.zeros(2, 3), torch.zeros(2, 3)], torch.zeros(1, 16))


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
    assert re.search(r"^  cpu: .*reference$", out, re.M)
    assert "extension mibcore._C:" in out
