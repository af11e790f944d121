"""Fused tensor_fusion (TFN + Linear) against the float64 reference, with and without dropout."""
import math

import pytest
import torch

import mibcore
from mibcore import functional as MF
from mibcore.ops.rng import draw_rng
from tests import philox
from tests import utils

# The Triton backend (interpreted here, slow) has its own small-shape tests below.
FUSED = [b for b in utils.backends("tensor_fusion", fused=True) if b != "triton"]
TRITON = "triton" in utils.backends("tensor_fusion")


def make(batch, dims, out, dtype=torch.float64, bias=True):
    inputs = [torch.randn(batch, d, dtype=dtype, requires_grad=True) for d in dims]
    fused = math.prod(d + 1 for d in dims)
    weight = (torch.randn(out, fused, dtype=dtype) / fused**0.5).requires_grad_()
    b = torch.randn(out, dtype=dtype, requires_grad=True) if bias else None
    return inputs, weight, b


def grads(y, tensors, grad_y):
    wanted = [t for t in tensors if t is not None]
    return torch.autograd.grad(y, wanted, grad_y)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dims", [(1, 7), (7, 1, 50), (50, 63), (3, 7, 2), (63, 1, 1)])
@pytest.mark.parametrize("batch", [1, 2, 33, 257])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference_float64(backend, dims, batch, bias):
    if batch == 257 and math.prod(d + 1 for d in dims) > 4000:
        pytest.skip("kept small for CI time")
    inputs, weight, b = make(batch, dims, 5, bias=bias)
    with mibcore.backends.use(backend):
        y = MF.tensor_fusion(inputs, weight, b)
    with mibcore.backends.use("reference"):
        y_ref = MF.tensor_fusion(inputs, weight, b)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    grad_y = torch.randn_like(y)
    for g, g_ref in zip(grads(y, [*inputs, weight, b], grad_y), grads(y_ref, [*inputs, weight, b], grad_y)):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_lower_precision(backend, dtype, tol):
    inputs, weight, b = make(9, (5, 6, 4), 3, dtype=dtype)
    with mibcore.backends.use(backend):
        y = MF.tensor_fusion(inputs, weight, b)
    y64 = mibcore.reference.tensor_fusion([x.double() for x in inputs], weight.double(), b.double())
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), y64, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("batch, dims, out", [
    (1, (1, 7), 1),          # one batch lane, one output
    (16, (3, 7, 2), 25),     # one full vector of rows; outputs in blocks of at most 24
    (17, (50, 63), 13),      # 2 vectors, 15 idle lanes; two column chunks (3264 > 2048)
    (33, (7, 1, 50), 50),    # 32 + 1 rows; out 50 as 5 blocks of 10
    (257, (12, 6), 29),      # 8 x 32 rows + 1; weight-gradient depth (B) in blocks of 64
    (5, (4, 2, 3), 130),     # input-gradient depth (out) in blocks of 64
    (1100, (40, 30), 3),     # B > 512: narrower column chunks (953 columns, 2 chunks)
])
def test_float32_matches_float64_oracle_with_dropout(backend, batch, dims, out):
    # fp32 takes the CPU backend's own GEMM kernels (fusion_gemm_cpu.h) where built with
    # AVX-512, ATen's GEMM elsewhere: every batch/output blocking and column-chunk remainder
    # above, against float64, within the rounding bound of each reduction (its depth times the
    # sum of the absolute terms: the same computation on absolute values), whatever the order.
    p = 0.3
    inputs, weight, b = make(batch, dims, out, dtype=torch.float32)
    with mibcore.backends.use(backend):
        y = MF.tensor_fusion(inputs, weight, b, dropout=p, generator=torch.Generator().manual_seed(5))
    fused = math.prod(d + 1 for d in dims)
    keep = utils.predicted_keep((batch, fused), p, seed=5)
    grad_y = torch.randn_like(y)

    def float64_run(absolute):
        ref = [t.detach().double() for t in [*inputs, weight, b]]
        ref = [(t.abs() if absolute else t).requires_grad_() for t in ref]
        y_ref = mibcore.reference.tensor_fusion(ref[: len(dims)], ref[len(dims)], ref[-1], dropout=p, keep_mask=keep)
        g = grad_y.double().abs() if absolute else grad_y.double()
        return [y_ref, *grads(y_ref, ref, g)]

    depths = [fused, *(out * fused // (d + 1) for d in dims), batch, batch]  # y, inputs, weight, bias
    names = ["y", *(f"grad input {i}" for i in range(len(dims))), "grad weight", "grad bias"]
    actual = [y, *grads(y, [*inputs, weight, b], grad_y)]
    for got, want, magnitude, depth, name in zip(actual, float64_run(False), float64_run(True), depths, names):
        utils.assert_within(got, want, utils.rounding_bound(depth, magnitude, torch.float32), name)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
def test_half_precision_gradients_with_dropout(backend, dtype, tol):
    # fp16 runs the fp32 kernels on fp32 copies with the tile rounded to fp16; bf16 ATen's GEMM.
    # Two column chunks, a batch remainder; forward and every gradient against float64.
    batch, dims, out, p = 19, (50, 63), 7, 0.3
    inputs, weight, b = make(batch, dims, out, dtype=dtype)
    with mibcore.backends.use(backend):
        y = MF.tensor_fusion(inputs, weight, b, dropout=p, generator=torch.Generator().manual_seed(3))
    keep = utils.predicted_keep((batch, 51 * 64), p, seed=3)
    ref = [t.detach().double().requires_grad_() for t in [*inputs, weight, b]]
    y_ref = mibcore.reference.tensor_fusion(ref[:2], ref[2], ref[3], dropout=p, keep_mask=keep)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol)
    grad_y = torch.randn_like(y)
    for g, g_ref in zip(grads(y, [*inputs, weight, b], grad_y), grads(y_ref, ref, grad_y.double())):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), g_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", FUSED)
def test_dropout_mask_is_the_philox_contract_and_consistent(backend):
    # forward, weight gradient and input gradients all use the mask predicted by the contract.
    inputs, weight, b = make(6, (4, 3, 5), 7)
    p = 0.4
    with mibcore.backends.use(backend):
        y = MF.tensor_fusion(inputs, weight, b, dropout=p, generator=torch.Generator().manual_seed(9))
    rng = draw_rng("cpu", torch.Generator().manual_seed(9))
    keep = utils.predicted_keep((6, 5 * 4 * 6), p, rng=rng)
    y_ref = mibcore.reference.tensor_fusion(inputs, weight, b, dropout=p, keep_mask=keep)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)  # keep_prob 1-p is rounded to float32
    grad_y = torch.randn_like(y)
    for g, g_ref in zip(grads(y, [*inputs, weight, b], grad_y), grads(y_ref, [*inputs, weight, b], grad_y)):
        torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", FUSED)
def test_dropout_reproducible_unbiased_and_off_in_eval(backend):
    inputs, weight, b = make(4, (3, 2), 2, bias=False)
    with mibcore.backends.use(backend):
        run = lambda seed: MF.tensor_fusion(inputs, weight, dropout=0.5, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
        mean = torch.stack([run(s) for s in range(3000)]).mean(0)
        full = MF.tensor_fusion(inputs, weight, dropout=0.5, training=False)
    torch.testing.assert_close(mean, mibcore.reference.tensor_fusion(inputs, weight), rtol=0.1, atol=0.1)
    torch.testing.assert_close(full, mibcore.reference.tensor_fusion(inputs, weight))


@pytest.mark.parametrize("backend", FUSED)
def test_autograd_saves_no_outer_product(backend):
    batch, dims = 16, (20, 20, 20)
    inputs, weight, b = make(batch, dims, 4, dtype=torch.float32)
    saved = []
    with mibcore.backends.use(backend), torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        MF.tensor_fusion(inputs, weight, b, dropout=0.5)
    outer_bytes = batch * 21**3 * 4
    input_bytes = sum(x.numel() * 4 for x in inputs) + weight.numel() * 4
    assert sum(saved) <= input_bytes + 64  # the inputs, the weight and the 16-byte rng
    assert max(saved) < outer_bytes


@pytest.mark.parametrize("backend", FUSED)
def test_gradcheck_with_dropout(backend):
    inputs, weight, b = make(3, (2, 3, 2), 2)
    with mibcore.backends.use(backend):
        fn = lambda *a: MF.tensor_fusion(list(a[:3]), a[3], a[4], dropout=0.3,
                                         generator=torch.Generator().manual_seed(5))
        assert torch.autograd.gradcheck(fn, (*inputs, weight, b))


@pytest.mark.parametrize("backend", FUSED)
def test_opcheck_and_compile(backend):
    inputs, weight, b = make(3, (2, 4), 3, dtype=torch.float32)
    rng = torch.tensor([5, 6])
    torch.library.opcheck(torch.ops.mibcore.tensor_fusion.default, (inputs, weight, b, 0.25, rng))
    torch.library.opcheck(torch.ops.mibcore.tensor_fusion.default, (inputs, weight, None, 0.0, rng))
    torch.library.opcheck(torch.ops.mibcore.tensor_fusion_backward.default,
                          (torch.randn(3, 3), [x.detach() for x in inputs], weight.detach(), 0.25, rng))
    with mibcore.backends.use(backend):
        compiled = torch.compile(lambda xs, w, bb: MF.tensor_fusion(xs, w, bb), fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(inputs, weight, b), MF.tensor_fusion(inputs, weight, b))


@pytest.mark.parametrize("backend", FUSED)
def test_autocast_runs_the_gemm_in_bf16(backend):
    inputs, weight, b = make(4, (3, 3), 2, dtype=torch.float32)
    with mibcore.backends.use(backend), torch.autocast("cpu", dtype=torch.bfloat16):
        y = MF.tensor_fusion(inputs, weight, b)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert weight.grad.dtype == torch.float32


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch, out", [(0, 4), (3, 0)])  # an empty batch, zero outputs
def test_empty_shapes(backend, dtype, batch, out):
    inputs, weight, b = make(batch, (3, 2), out, dtype=dtype)
    with mibcore.backends.use(backend):
        y = MF.tensor_fusion(inputs, weight, b)
        assert y.shape == (batch, out)
        y.sum().backward()
    for t in [*inputs, weight]:  # every gradient is written, and zero
        assert torch.equal(t.grad, torch.zeros_like(t))


# ---------------------------------------------------------------- Triton (interpreter on CPU)


@pytest.mark.skipif(not TRITON, reason="triton not available")
@pytest.mark.parametrize("dims, batch", [((1, 7), 1), ((3, 7, 2), 33), ((7, 1, 5), 17), ((12, 6), 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_triton_matches_reference(dims, batch, bias):
    inputs, weight, b = make(batch, dims, 19, dtype=torch.float32, bias=bias)
    with mibcore.backends.use("triton"):
        y = MF.tensor_fusion(inputs, weight, b)
    y_ref = mibcore.reference.tensor_fusion([x.double() for x in inputs], weight.double(),
                                            None if b is None else b.double())
    # tl.dot may use TF32 on GPUs; the interpreter computes in fp32.
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    grad_y = torch.randn_like(y)
    ref_tensors = [t.detach().double().requires_grad_() if t is not None else None for t in [*inputs, weight, b]]
    y64 = mibcore.reference.tensor_fusion(ref_tensors[: len(dims)], ref_tensors[len(dims)], ref_tensors[-1])
    for g, g_ref in zip(grads(y, [*inputs, weight, b], grad_y), grads(y64, ref_tensors, grad_y.double())):
        torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not TRITON or not FUSED, reason="needs the cpu and triton backends")
def test_triton_and_cpu_drop_the_same_elements():
    inputs, weight, b = make(5, (3, 2, 4), 6, dtype=torch.float32)
    outs = []
    for backend in ("cpu", "triton"):
        with mibcore.backends.use(backend):
            y = MF.tensor_fusion(inputs, weight, b, dropout=0.5, generator=torch.Generator().manual_seed(4))
            outs.append((y, grads(y, [*inputs, weight], torch.ones_like(y))))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    for g_cpu, g_triton in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(g_cpu, g_triton, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not TRITON, reason="triton not available")
def test_triton_opcheck():
    inputs, weight, b = make(3, (2, 4), 3, dtype=torch.float32)
    rng = torch.tensor([5, 6])
    torch.library.opcheck(torch.ops.mibcore.tensor_fusion_triton.default, (inputs, weight, b, 0.25, rng))


@pytest.mark.parametrize("backend", FUSED + (["triton"] if TRITON else []))
def test_float64_dropout_scale_is_exact(backend):
    # The kept elements are scaled by the double 1 / (1 - p), not by its float32 rounding
    # (off by ~1e-8 relative: a silent precision loss in float64).
    inputs, weight, b = make(3, (2, 3), 4)
    p, seed = 0.3, 11
    with mibcore.backends.use(backend):
        y = MF.tensor_fusion(inputs, weight, b, dropout=p, generator=torch.Generator().manual_seed(seed))
    fused = mibcore.reference.outer_product([x.detach() for x in inputs])
    keep = philox.dropout_keep_mask(fused.shape, draw_rng("cpu", torch.Generator().manual_seed(seed)), 1.0 - p)
    y_ref = mibcore.reference.tensor_fusion([x.detach() for x in inputs], weight.detach(), b.detach(), dropout=p,
                                            keep_mask=keep)
    torch.testing.assert_close(y, y_ref, rtol=1e-13, atol=1e-13)
    grad_y = torch.randn_like(y)
    (grad_w,) = torch.autograd.grad(y, [weight], grad_y)
    expected = grad_y.t() @ (fused * keep / (1.0 - p))
    torch.testing.assert_close(grad_w, expected, rtol=1e-13, atol=1e-13)
