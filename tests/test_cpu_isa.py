"""The CPU kernels' run-time instruction-set dispatch (csrc/cpu/isa.h, mibcore.cpu_isa): one build
that runs on any x86-64 CPU, levels chosen at run time, and the tests of every level."""
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch

import mibcore
from mibcore import functional as MF
from tests import utils

pytestmark = pytest.mark.skipif(not mibcore._extension.available(), reason="mibcore._C is not built")
X86 = platform.machine() in ("x86_64", "AMD64")


def test_levels_reported_and_the_default_is_the_highest_supported():
    assert mibcore.cpu_isa.current() == mibcore.cpu_isa.supported()
    assert mibcore.cpu_isa.available()[0] == "baseline"
    assert mibcore.cpu_isa.available()[-1] == mibcore.cpu_isa.supported()
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if X86:
        assert (mibcore.cpu_isa.supported() != "baseline") == (" avx2" in flags and " fma" in flags and " bmi2" in flags)
        assert (mibcore.cpu_isa.supported() == "avx512") == all(f" {f}" in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq"))


def test_bad_levels_are_clear_errors():
    with pytest.raises(ValueError, match="must be one of baseline, avx2, avx512"):
        mibcore.cpu_isa.set("sse9")
    above = mibcore.cpu_isa.LEVELS.index(mibcore.cpu_isa.supported()) + 1
    if above < len(mibcore.cpu_isa.LEVELS):
        with pytest.raises(ValueError, match="above what this CPU supports"):
            mibcore.cpu_isa.set(mibcore.cpu_isa.LEVELS[above])
    assert mibcore.cpu_isa.current() == mibcore.cpu_isa.supported()


@pytest.mark.parametrize("value, expected", [("baseline", "baseline"), ("sse9", "MIBCORE_CPU_ISA: CPU instruction-set level must be")])
def test_environment_variable(value, expected):
    code = "import mibcore; print(mibcore.cpu_isa.current())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "MIBCORE_CPU_ISA": value})
    assert expected in (out.stdout if out.returncode == 0 else out.stderr), out.stderr[-2000:]


@pytest.mark.parametrize("backend", utils.backends("dropout", fused=True))
def test_cpu_cases_run_at_their_level(backend):
    # The conftest sets the level of a parametrized cpu case while it runs.
    if backend == "cpu":
        assert mibcore.cpu_isa.current() == backend.isa
    assert {b.isa for b in utils.backends("dropout") if b == "cpu"} == set(mibcore.cpu_isa.available())


def test_every_level_draws_the_same_samples_and_masks():
    # The Philox contract fixes the values: masks bit-equal, eps equal up to fp32 rounding of
    # the transcendental functions, across levels.
    mu, scale = torch.randn(33, 257), torch.randn(33, 257)
    results = {}
    for level in mibcore.cpu_isa.available():
        with mibcore.cpu_isa.use(level), mibcore.backends.use("cpu"):
            z, _ = MF.reparameterize_kl(mu, scale, generator=torch.Generator().manual_seed(3))
            y = MF.dropout(mu, 0.4, generator=torch.Generator().manual_seed(4))
        results[level] = (z, y)
    z0, y0 = results["baseline"]
    for z, y in results.values():
        assert torch.equal(y, y0)
        torch.testing.assert_close(z, z0, rtol=1e-6, atol=1e-6)


def _functions_with(pattern, so):
    """{function: count} of the instructions matching `pattern` in the disassembly of `so`."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", so], capture_output=True, text=True,
                             check=True).stdout
    found, function = {}, None
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
        elif function and re.search(pattern, line):
            found[function] = found.get(function, 0) + 1
    return found


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="x86-64 disassembly needs objdump")
@pytest.mark.skipif("march" in (mibcore._extension.load() or {}), reason="built for one -march (MIBCORE_CPU_ARCH)")
def test_no_instruction_above_the_baseline_outside_the_dispatched_kernels():
    # A wheel built on any machine runs on any x86-64 CPU: AVX (any VEX/EVEX instruction), BMI
    # and the rest appear only in the per-level namespaces, AVX-512 only in mibcore::avx512.
    from mibcore import _C  # (the one this interpreter loads: a build for another Python may sit beside it)

    so = _C.__file__
    above_baseline = _functions_with(r"\t(v[a-z0-9]+|pdep|pext|shlx|shrx|sarx|rorx|andn|bzhi|tzcnt|lzcnt)\s", so)
    outside = {f: n for f, n in above_baseline.items() if not re.search(r"mibcore::(avx2|avx512)::", f)}
    assert not outside, f"instructions above x86-64 outside the dispatched kernels: {list(outside)[:5]}"
    avx512 = _functions_with(r"%zmm|%k[1-7]", so)
    assert avx512 and all("mibcore::avx512::" in f for f in avx512), [f for f in avx512 if "mibcore::avx512::" not in f][:5]
    assert any("mibcore::avx2::" in f for f in above_baseline)
