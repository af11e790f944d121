"""Test configuration. Where there is no GPU, the Triton kernels run in the interpreter on CPU
tensors: TRITON_INTERPRET must be set before any Triton kernel module is imported (the
@triton.jit decorator reads it), so it is set here, first. Where there is a GPU, it is left
unset and the kernels run compiled, on CUDA tensors (tests/test_gpu.py)."""
import os

import torch  # (importing torch loads no Triton kernel)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import mibcore  # noqa: E402
from tests import utils  # noqa: E402


def pytest_configure(config):
    # CI names the backends it requires (MIBCORE_REQUIRE_BACKENDS): a missing one fails the run
    # instead of silently dropping its tests, and so does an operator whose spec omits one
    # (without declaring it `missing`, with a reason).
    missing = utils.missing_required_backends()
    if missing:
        raise pytest.UsageError(
            f"MIBCORE_REQUIRE_BACKENDS names backends that are not available here: {', '.join(missing)} "
            f"(available: {', '.join(mibcore.backends.available())}). Build the extension "
            "(`make build`) or install triton, declare the backend in the operator's spec, or change "
            "MIBCORE_REQUIRE_BACKENDS."
        )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def pytest_runtest_logreport(report):
    # MIBCORE_FAILURES_NOW=1 (the device check): each failure's traceback printed as it happens, so
    # that a run cut off at its time cap still shows why its tests failed (pytest's summary comes
    # last). Under xdist this runs in the controller, which writes the log.
    if report.failed and os.environ.get("MIBCORE_FAILURES_NOW") == "1":
        print(f"\n=== FAILED {report.nodeid} ({report.when})\n{report.longreprtext[-4000:]}", flush=True)


def pytest_make_parametrize_id(config, val, argname):
    # cpu backends carry their instruction-set level (utils.Backend): name the case after it.
    return val.id if isinstance(val, utils.Backend) else None


def _backend_param(request):
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    return next((v for v in params.values() if isinstance(v, utils.Backend)), None)


@pytest.fixture(autouse=True)
def _seed_and_reset_backend(request):
    torch.manual_seed(1234)
    mibcore.backends.set(None)
    mibcore.backends.clear_cache()
    # A test parametrized with a cpu backend runs its kernels at that backend's level.
    with utils.at_level(_backend_param(request)):
        yield
    mibcore.backends.set(None)
    mibcore.backends.clear_cache()
