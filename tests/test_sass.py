"""The elementwise Triton kernels' design, read from their sm_90 SASS (compiled ahead of time, no
GPU: mibcore/kernels/sass.py): 16-byte global accesses, and the forward KL summed once per program."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def _profiles(*only):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = [sys.executable, "-m", "mibcore.kernels.sass", "--json", *(a for o in only for a in ("--only", o))]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def _widths(counts):
    return {int(bits): n for bits, n in counts.items()}


def test_elementwise_kernels_use_16_byte_accesses_and_reduce_once():
    profiles = _profiles("dropout 4096x1024 torch.float32", "dropout 4096x1024 torch.bfloat16",
                         "reparameterize_kl 4096x1024 P0 sample=True torch.float32",
                         "reparameterize_kl 4096x1024 P0 sample=True torch.bfloat16")
    kernels = {(p["label"].split()[-1], p["kernel"]) for p in profiles}
    assert {("torch.float32", "_dropout_kernel"), ("torch.float32", "_forward_kernel"),
            ("torch.float32", "_backward_kernel"), ("torch.bfloat16", "_forward_kernel")} <= kernels
    for p in profiles:
        loads, stores = _widths(p["loads"]), _widths(p["stores"])
        # Element data moves in 128-bit accesses only: the 64-bit loads are the rng (seed, offset),
        # the one 32-bit access per program is the KL row (forward) or its gradient (backward).
        assert loads.get(128, 0) >= 1 and stores.get(128, 0) >= 1, p
        assert not {bits for bits in (*loads, *stores) if bits < 32}, p
        assert loads.get(32, 0) + stores.get(32, 0) <= 1, p
        if p["kernel"] == "_forward_kernel":
            assert p["shuffles"] <= 8, p  # one block reduction (5 butterfly steps + a cross-warp stage); it was 4


def test_launch_report_estimate_model():
    from benchmarks import launch_report as r

    assert [r.issue_cycles(op) for op in ("FFMA", "MUFU.EX2", "IMAD.WIDE.U32", "SHFL.BFLY", "F2I.TRUNC.NTZ",
                                          "DFMA", "LDG.E.128", "I2FP.F32.U32")] == [1, 8, 2, 1, 8, 2, 1, 2]
    sass = "\n".join(f"        /*{16 * i:04x}*/                   {op} ;" for i, op in enumerate(["FFMA R1, R2, R3, R4",
                                                                                              "@!P0 MUFU.EX2 R1, R2"]))
    from mibcore.kernels import sass as s

    assert s.opcodes(sass) == ["FFMA", "MUFU.EX2"]
    # Loops count by their trips (Launch.trips, given by the host code: the tensor_fusion GEMMs).
    text = "\n".join(["        /*0000*/                   MOV R1, R2 ;", ".L_x_0:",
                      "        /*0010*/                   FFMA R1, R2, R3, R4 ;",
                      "        /*0020*/              @P0 BRA `(.L_x_0) ;", "        /*0030*/                   EXIT ;"])
    assert s.loops(text) == [(1, 2)] and s.main_loop(text) == ["FFMA", "BRA"] and s.fma_share(s.main_loop(text)) == 0.5
    assert r.program_cycles(text, ()) == 4 and r.program_cycles(text, (5,)) == 1 + 2 * 5 + 1
    assert r.program_cycles(text, (5, 2)) is None  # (loops the host does not name: not counted)


def test_tensor_fusion_philox_once_per_4_elements_and_fma_bound_forward():
    # Issue 20's targets, read from the sm_90 SASS at the paper's shape (fp32, dropout 0.5): Philox
    # blocks per outer-product element <= 1/4 in each pass (the keep bits, made once per pass; a
    # round on constants folds away, so slightly below), multiply-adds >= 50% of the forward main loop.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "import json; from benchmarks import launch_report as r; print(json.dumps(r.tensor_fusion_figures()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.splitlines()[-1])
    assert set(figures) == {"forward", "backward"}
    for f in figures.values():
        assert 0.2 < f["philox_per_element"] <= 0.25, figures
        assert f["estimate_us"] >= f["floor_us"], figures
    assert figures["forward"]["fma_share"] >= 0.5, figures
