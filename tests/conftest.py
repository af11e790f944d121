"""Test configuration. TRITON_INTERPRET must be set before any Triton kernel module is
imported (the @triton.jit decorator reads it), so it is set here, first."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import mibcore  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_and_reset_backend():
    torch.manual_seed(1234)
    mibcore.backends.set(None)
    yield
    mibcore.backends.set(None)
