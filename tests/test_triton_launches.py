"""The Triton backend's host code and numerics contracts, checked without a GPU: the launches it
makes (recorded on meta tensors by mibcore/kernels/_launch.recording, nothing runs), and small
interpreter runs of the float64, strided-bias, shift and determinism fixes."""
import importlib.util
import math

import pytest
import torch

import mibcore
from mibcore import functional as MF
from mibcore.ops.rng import draw_rng
from mibcore.ops._spec import meta, meta_rng
from tests import philox

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def _tensor_fusion_launches(batch, dims, out, dtype=torch.float32, dropout=0.0, backward=False):
    from mibcore.kernels import _launch
    from mibcore.kernels import tensor_fusion as k

    inputs = [meta(batch, d, dtype=dtype) for d in dims]
    weight = meta(out, math.prod(d + 1 for d in dims), dtype=dtype)
    rng = meta_rng()
    with _launch.recording() as launches:
        if backward:
            k.backward(meta(batch, out, dtype=dtype), inputs, weight, dropout, rng)
        else:
            k.forward(inputs, weight, meta(out, dtype=dtype), dropout, rng)
    return launches


def _programs(launch):
    return math.prod(launch.grid)


def _gemms(launches):
    return [launch for launch in launches if "PRECISION" in launch.constexprs]


def test_paper_shape_forward_fills_the_device_in_one_wave():
    # 41 chunks of 64 columns x 6 groups of 9 values of i: 246 programs, at most two per SM.
    for backward in (False, True):
        launch = _gemms(_tensor_fusion_launches(32, (50, 50, 50), 50, dropout=0.5, backward=backward))[-1]
        assert 132 < _programs(launch) <= 2 * 132


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_tensor_fusion_launches_only_its_kernels(dropout):
    # No torch op around the kernels (padding, partial sums, bias, einsums, unpadding: 8 torch
    # launches in the forward and 15 in the backward before): the keep bits once per pass (one
    # Philox per 4 elements), the GEMMs, one kernel that sums their partials.
    from benchmarks import step_ops

    def launches(backward):
        inner = step_ops.OpCounter(inside="tensor_fusion")
        with inner:
            triton = _tensor_fusion_launches(32, (50, 50, 50), 50, dropout=dropout, backward=backward)
        return [launch.kernel.__name__ for launch in triton], sum(n for _, n in inner.records)

    bits = ["_keep_bits_kernel"] if dropout else []
    assert launches(False) == (bits + ["_forward_kernel", "_sum_partials_kernel"], 0)
    assert launches(True) == (bits + ["_grad_weight_kernel", "_grad_input_kernel", "_grad_factors_kernel"], 0)


def test_offsets_are_int32_unless_they_may_reach_2_to_the_31():
    assert {launch.constexprs["WIDE"] for launch in _tensor_fusion_launches(32, (50, 50, 50), 50, dropout=0.5)
            if "WIDE" in launch.constexprs} == {False}
    # 601^3 columns x 16 outputs: the weight has more than 2^31 elements.
    assert {launch.constexprs["WIDE"] for launch in _tensor_fusion_launches(64, (600, 600, 600), 16, backward=True)
            if "WIDE" in launch.constexprs} == {True}


def test_every_launch_of_the_table_fits_cuda_grid_limits():
    from mibcore.kernels import _launch, aot

    recorded = aot.record_calls()
    kernels = {launch.kernel.__name__ for _, launch in recorded}
    assert {"_forward_kernel", "_grad_weight_kernel", "_grad_input_kernel", "_dropout_kernel"} <= kernels
    for label, launch in recorded:
        assert all(g <= limit for g, limit in zip(launch.grid, _launch.MAX_GRID)), label
    # The old grad kernels put (d1 + 1)(d2 + 1) = 361,201 programs on axis 1 here.
    for launch in _tensor_fusion_launches(64, (600, 600, 600), 16, backward=True):
        assert len(launch.grid) == 1


@pytest.mark.parametrize("dims", [(50, 50, 300), (50, 600)])
def test_tensor_fusion_tiles_are_capped_along_the_last_input(dims):
    for launch in _tensor_fusion_launches(32, dims, 50) + _tensor_fusion_launches(32, dims, 50, backward=True):
        assert launch.constexprs.get("BLOCK_R", 0) <= 64


def test_fp32_dots_are_ieee_unless_tf32_is_enabled():
    from mibcore.kernels import _launch
    from mibcore.kernels import low_rank_fusion as lmf

    def precisions(dtype):
        out = [launch.constexprs["PRECISION"] for launch in _gemms(_tensor_fusion_launches(9, (3, 4), 5, dtype))]
        x = [meta(9, 3, dtype=dtype), meta(9, 4, dtype=dtype)]
        with _launch.recording() as launches:
            lmf.forward(x, [meta(2, 4, 5, dtype=dtype), meta(2, 5, 5, dtype=dtype)], meta(2, dtype=dtype),
                        meta(5, dtype=dtype))
        return set(out + [launch.constexprs["PRECISION"] for launch in launches])

    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert precisions(torch.float32) == {"ieee"}
        torch.backends.cuda.matmul.allow_tf32 = True
        assert precisions(torch.float32) == {"tf32"}
        assert precisions(torch.float64) == {"ieee"} and precisions(torch.bfloat16) == {"ieee"}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


# ---------------------------------------------------------------- interpreter runs (small shapes)
# (on a GPU machine the kernels run compiled, on CUDA only: tests/test_gpu.py covers these there)

interpreted = pytest.mark.skipif(not mibcore.backends.BACKENDS["triton"].serves("tensor_fusion", "cpu"),
                                 reason="the Triton interpreter serves CPU tensors only without a GPU")


def _tensor_fusion_case(batch, dims, out, dtype):
    inputs = [torch.randn(batch, d, dtype=dtype, requires_grad=True) for d in dims]
    fused = math.prod(d + 1 for d in dims)
    weight = (torch.randn(out, fused, dtype=dtype) / fused**0.5).requires_grad_()
    return inputs, weight


@interpreted
@pytest.mark.parametrize("dims", [(3, 2, 70), (4, 5)])
def test_tensor_fusion_float64_is_computed_in_float64(dims):
    # (3, 2, 70): two K chunks; dropout against the mask the Philox contract predicts.
    inputs, weight = _tensor_fusion_case(5, dims, 7, torch.float64)
    bias = torch.randn(7, 2, dtype=torch.float64)[:, 0].requires_grad_()  # strided: read with its stride
    p = 0.3
    with mibcore.backends.use("triton"):
        y = MF.tensor_fusion(inputs, weight, bias, dropout=p, generator=torch.Generator().manual_seed(2))
    rng = draw_rng("cpu", torch.Generator().manual_seed(2))
    keep = philox.dropout_keep_mask((5, weight.shape[1]), rng, 1 - p)
    y_ref = mibcore.reference.tensor_fusion(inputs, weight, bias, dropout=p, keep_mask=keep)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    grad_y = torch.randn_like(y)
    tensors = [*inputs, weight, bias]
    for g, g_ref in zip(torch.autograd.grad(y, tensors, grad_y), torch.autograd.grad(y_ref, tensors, grad_y)):
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


@interpreted
def test_tensor_fusion_strided_bias_float32():
    inputs, weight = _tensor_fusion_case(4, (3, 5), 6, torch.float32)
    bias = torch.randn(6, 3)[:, 1]
    with mibcore.backends.use("triton"):
        y = MF.tensor_fusion(inputs, weight, bias)
    y_ref = mibcore.reference.tensor_fusion([x.double() for x in inputs], weight.double(), bias.double())
    torch.testing.assert_close(y.double(), y_ref, rtol=2e-5, atol=2e-6)


@interpreted
def test_reparameterize_kl_float64_shift_is_exact():
    # 0.1 is not a float32: passed as one, std would be off by ~1e-9 relative.
    mu = torch.randn(3, 9, dtype=torch.float64)
    scale = torch.randn(3, 9, dtype=torch.float64)
    with mibcore.backends.use("triton"):
        z, kl = MF.reparameterize_kl(mu, scale, shift=0.1, sample=False, reduction="none")
    with mibcore.backends.use("reference"):
        z_ref, kl_ref = MF.reparameterize_kl(mu, scale, shift=0.1, sample=False, reduction="none")
    torch.testing.assert_close(kl, kl_ref, rtol=1e-13, atol=1e-13)


@interpreted
def test_determinism_contract():
    inputs, weight = _tensor_fusion_case(5, (3, 4, 2), 6, torch.float32)
    lmf_inputs = [torch.randn(5, d, requires_grad=True) for d in (3, 4)]
    factors = [torch.randn(2, d + 1, 6, requires_grad=True) for d in (3, 4)]
    w, b = torch.randn(1, 2, requires_grad=True), torch.randn(1, 6, requires_grad=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with mibcore.backends.use("triton"):
            # tensor_fusion: no atomics anywhere; it runs, and twice gives the same bits.
            runs = []
            for _ in range(2):
                y = MF.tensor_fusion(inputs, weight, None, dropout=0.2, generator=torch.Generator().manual_seed(1))
                runs.append(torch.autograd.grad(y.sum(), [*inputs, weight]))
            for g1, g2 in zip(*runs):
                assert torch.equal(g1, g2)
            # low_rank_fusion's backward accumulates with float atomics: torch's alert.
            y = MF.low_rank_fusion(lmf_inputs, factors, w, b)
            with pytest.raises(RuntimeError, match="deterministic"):
                y.sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
