"""Fused low_rank_fusion (LMF) against the float64 reference."""
import pytest
import torch

import mibcore
from mibcore import functional as MF
from tests import utils

FUSED = utils.backends("low_rank_fusion", fused=True)
# Both compute float64 inputs in float64 (the Triton kernels once did it silently in fp32).
TOL = {"cpu": 1e-9, "triton": 1e-9}


def make(batch, dims, out, rank, dtype=torch.float64, flat=False):
    inputs = [torch.randn(batch, d, dtype=dtype, requires_grad=True) for d in dims]
    factors = [torch.randn(rank, d + 1, out, dtype=dtype, requires_grad=True) for d in dims]
    w = torch.randn(rank if flat else (1, rank), dtype=dtype, requires_grad=True)
    b = torch.randn(out if flat else (1, out), dtype=dtype, requires_grad=True)
    return inputs, factors, w, b


def _cases():
    # The Triton interpreter is slow: it gets the small batches and the [1, R] / [1, out] layouts.
    for backend in FUSED:
        for dims in [(1, 7), (7, 1, 50), (50, 63), (3, 2, 4)]:
            for batch in [1, 3, 257]:
                for rank, out in [(1, 1), (5, 50), (3, 7)]:
                    for flat in [False, True]:
                        if backend == "triton" and (batch == 257 or flat):
                            continue
                        yield pytest.param(backend, dims, batch, rank, out, flat,
                                           id=f"{backend}-{dims}-B{batch}-r{rank}-o{out}-{'flat' if flat else '2d'}")


@pytest.mark.parametrize("backend, dims, batch, rank, out, flat", list(_cases()))
def test_matches_reference_float64(backend, dims, batch, rank, out, flat):
    inputs, factors, w, b = make(batch, dims, out, rank, flat=flat)
    tensors = [*inputs, *factors, w, b]
    with mibcore.backends.use(backend):
        y = MF.low_rank_fusion(inputs, factors, w, b)
    with mibcore.backends.use("reference"):
        y_ref = MF.low_rank_fusion(inputs, factors, w, b)
    tol = TOL[backend] * max(1.0, y_ref.abs().max().item())
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    grad_y = torch.randn_like(y)
    for g, g_ref in zip(torch.autograd.grad(y, tensors, grad_y), torch.autograd.grad(y_ref, tensors, grad_y)):
        assert g.shape == g_ref.shape
        tol = TOL[backend] * max(1.0, g_ref.abs().max().item())
        torch.testing.assert_close(g, g_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", [b for b in FUSED if b == "cpu"])
@pytest.mark.parametrize("batch, dims, rank, out", [(600, (63, 50, 9), 5, 50), (40, (128, 128), 8, 128)])
def test_large_calls_match_reference_float64(backend, batch, dims, rank, out):
    # Above 2^21 multiply-adds: the avx2 and baseline levels run the GEMM formulation
    # (csrc/cpu/low_rank_fusion_cpu.cpp, lmf_gemm), avx512 its loops.
    test_matches_reference_float64(backend, dims, batch, rank, out, flat=False)


@pytest.mark.skipif("cpu" not in FUSED, reason="cpu backend not built")
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpu_backward_split_over_threads(threads):
    # Large enough that the CPU backward splits the batch into one task per thread, each with
    # its own partial factor gradients; the sums must not depend on the split.
    inputs, factors, w, b = make(1203, (50, 63, 9), 50, 5)
    tensors = [*inputs, *factors, w, b]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with mibcore.backends.use("cpu"):
            y = MF.low_rank_fusion(inputs, factors, w, b)
            grads = torch.autograd.grad(y, tensors, torch.ones_like(y))
    finally:
        torch.set_num_threads(previous)
    y_ref = mibcore.reference.low_rank_fusion(inputs, factors, w, b)
    for g, g_ref in zip(grads, torch.autograd.grad(y_ref, tensors, torch.ones_like(y_ref))):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9 * max(1.0, g_ref.abs().max().item()))


@pytest.mark.skipif("cpu" not in FUSED, reason="cpu backend not built")
def test_cpu_empty_batch():
    inputs, factors, w, b = make(0, (3, 4), 5, 2)
    with mibcore.backends.use("cpu"):
        y = MF.low_rank_fusion(inputs, factors, w, b)
    assert y.shape == (0, 5)
    grads = torch.autograd.grad(y.sum(), [*inputs, *factors, w, b])
    assert [g.shape for g in grads] == [t.shape for t in [*inputs, *factors, w, b]]
    assert all(bool((g == 0).all()) for g in grads)


# cpu only: the Triton kernels compute in fp32, so gradcheck (float64) does not apply to them.
@pytest.mark.parametrize("backend", [b for b in FUSED if b == "cpu"])
def test_float32_bf16_gradcheck_opcheck_compile(backend):
    inputs, factors, w, b = make(4, (3, 5, 2), 6, 3, dtype=torch.float32)
    with mibcore.backends.use(backend):
        y = MF.low_rank_fusion(inputs, factors, w, b)
        y64 = mibcore.reference.low_rank_fusion([x.double() for x in inputs], [f.double() for f in factors],
                                                w.double(), b.double())
        torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert MF.low_rank_fusion(inputs, factors, w, b).dtype == torch.bfloat16
        d = make(2, (2, 3), 2, 2)
        assert torch.autograd.gradcheck(lambda *a: MF.low_rank_fusion(list(a[:2]), list(a[2:4]), a[4], a[5]),
                                        (*d[0], *d[1], d[2], d[3]))
        compiled = torch.compile(lambda *a: MF.low_rank_fusion(a[0], a[1], a[2], a[3]), fullgraph=True,
                                 backend="aot_eager")
        torch.testing.assert_close(compiled(inputs, factors, w, b), y)
    torch.library.opcheck(torch.ops.mibcore.low_rank_fusion.default, (inputs, factors, w, b))
    torch.library.opcheck(torch.ops.mibcore.low_rank_fusion_backward.default,
                          (torch.randn(4, 6), [x.detach() for x in inputs], [f.detach() for f in factors], w.detach()))


@pytest.mark.skipif("triton" not in FUSED, reason="triton not available")
def test_triton_opcheck():
    inputs, factors, w, b = make(4, (3, 5, 2), 6, 3, dtype=torch.float32)
    torch.library.opcheck(torch.ops.mibcore.low_rank_fusion_triton.default, (inputs, factors, w, b))


@pytest.mark.parametrize("backend", ["reference", *FUSED])
@pytest.mark.parametrize("shape", [(2, 2), (4, 1), (1, 1, 4)])
def test_rank_weights_of_the_right_size_but_wrong_shape_are_refused(backend, shape):
    inputs, factors, _, b = make(3, (2, 3), 4, 4)
    with mibcore.backends.use(backend), pytest.raises(ValueError, match=r"`rank_weights` must be \[4\] or \[1, 4\]"):
        MF.low_rank_fusion(inputs, factors, torch.ones(shape, dtype=torch.float64), b)


@pytest.mark.parametrize("backend", ["reference", *[b for b in FUSED if b != "triton"]])
def test_autocast_keeps_float64_as_autocast_does(backend):
    # F.linear under autocast keeps float64 operands; so do the fusion operators.
    inputs, factors, w, b = make(3, (2, 3), 4, 2)
    with mibcore.backends.use(backend), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.nn.functional.linear(inputs[0], torch.ones(4, 2, dtype=torch.float64)).dtype == torch.float64
        assert MF.low_rank_fusion(inputs, factors, w, b).dtype == torch.float64
