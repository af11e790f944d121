"""The contract tests on CUDA, for every backend that implements an operator on GPUs (compiled
triton, cuda): forward and backward against float64 oracles, samples and dropout masks against
the Philox mirror and the cpu backend bit for bit, every dtype, autocast, non-contiguous inputs,
shapes past the old grid limits, determinism, CUDA-graph capture and torch.compile.

Marked `gpu`: skipped where torch.cuda.is_available() is false (the conftest), and every test
takes the `device` fixture, which skips too; the parameters are the backends that implement the
operator for CUDA tensors (mibcore.ops), so the tests collect everywhere and a backend that is
not built on a GPU machine is skipped with its reason, not silently dropped.
"""
import math

import pytest
import torch

import mibcore
from mibcore import functional as MF
from mibcore.ops import SPECS
from mibcore.reference import philox
from mibcore.reference.reparameterize_kl import std_and_log_std
from tests import utils

pytestmark = pytest.mark.gpu

PARAMS = mibcore.constants.PARAMETERIZATIONS
GPU_TOL = {  # (rtol, atol) of a GPU backend against a float64 oracle, per dtype
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 2e-6),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 3e-2),
}


def gpu_backends(op):
    """The backends that implement `op` for CUDA tensors (whether or not built here)."""
    return [name for name, impl in SPECS[op].implementations.items()
            if name != "reference" and ("cuda" in impl.devices or name == "triton")]


@pytest.fixture
def device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


def serve(backend, op):
    if not mibcore.backends.BACKENDS[backend].serves(op, "cuda"):
        pytest.skip(f"backend {backend} does not serve {op} on CUDA here")
    return mibcore.backends.implementation(op, backend)


def close(actual, expected, dtype, scale=1.0):
    rtol, atol = GPU_TOL[dtype]
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=rtol * scale, atol=atol * scale)


def rng_pair(seed):
    return torch.tensor([seed * 7919 + 1, seed * 104729 + 3], dtype=torch.int64)


# ---------------------------------------------------------------- reparameterize_kl


@pytest.mark.parametrize("backend", gpu_backends("reparameterize_kl"))
@pytest.mark.parametrize("dtype", utils.DTYPES)
@pytest.mark.parametrize("parameterization", PARAMS)
@pytest.mark.parametrize("shape", [(32, 50), (33, 257), (4096, 1024)])
def test_reparameterize_kl_samples_and_gradients(device, backend, dtype, parameterization, shape):
    op = serve(backend, "reparameterize_kl")
    mu = torch.randn(shape, dtype=torch.float64)
    scale = torch.randn(shape, dtype=torch.float64)
    if parameterization == "std":
        scale = scale.abs() + 0.1
    mu, scale = mu.to(dtype), scale.to(dtype)
    rng = rng_pair(1)
    code = PARAMS.index(parameterization)
    m, s = mu.to(device).requires_grad_(), scale.to(device).requires_grad_()
    z, kl = op(m, s, rng.to(device), code, -5.0, True)
    # eps is the Philox mirror's; z, the KL and the gradients are the reference's given that eps.
    eps = philox.normal_like(mu, rng).double()
    m64, s64 = mu.double().requires_grad_(), scale.double().requires_grad_()
    std, _ = std_and_log_std(s64, parameterization, -5.0)
    with mibcore.backends.use("reference"):
        _, kl_ref = MF.reparameterize_kl(m64, s64, parameterization=parameterization, sample=False, reduction="none")
    close(z, m64 + std * eps, dtype, scale=4)
    close(kl, kl_ref, dtype if dtype == torch.float64 else torch.float32, scale=10)
    # Against the cpu backend through the same rng: the same samples, the same gradients.
    z_cpu, kl_cpu = mibcore.backends.implementation("reparameterize_kl", "cpu")(
        mu.requires_grad_(), scale.requires_grad_(), rng, code, -5.0, True)
    close(z, z_cpu, dtype, scale=4)
    grad_z = torch.randn(shape, dtype=dtype)
    grads = torch.autograd.grad((z * grad_z.to(device)).sum() + kl.sum(), [m, s])
    grads_cpu = torch.autograd.grad((z_cpu * grad_z).sum() + kl_cpu.sum(), [mu, scale])
    for g, g_cpu in zip(grads, grads_cpu):
        close(g, g_cpu, dtype, scale=10)


@pytest.mark.parametrize("backend", gpu_backends("reparameterize_kl"))
def test_reparameterize_kl_non_contiguous_and_float64_shift(device, backend):
    serve(backend, "reparameterize_kl")
    mu = torch.randn(64, 258, dtype=torch.float64, device=device)[:, ::2]
    scale = torch.randn(64, 258, dtype=torch.float64, device=device)[:, 1::2]
    with mibcore.backends.use(backend):
        z, kl = MF.reparameterize_kl(mu, scale, shift=0.1, sample=False, reduction="none")
    with mibcore.backends.use("reference"):
        _, kl_ref = MF.reparameterize_kl(mu.cpu(), scale.cpu(), shift=0.1, sample=False, reduction="none")
    torch.testing.assert_close(z, mu)
    torch.testing.assert_close(kl.cpu(), kl_ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- tensor_fusion


def _tfn(batch, dims, out, dtype, device, bias=True):
    torch.manual_seed(0)
    inputs = [torch.randn(batch, d, dtype=dtype, device=device) for d in dims]
    fused = math.prod(d + 1 for d in dims)
    weight = (torch.randn(out, fused, device=device) / fused**0.5).to(dtype)
    b = torch.randn(out, dtype=dtype, device=device) if bias else None
    return inputs, weight, b


def _grads(y, tensors, grad_y):
    return torch.autograd.grad(y, [t for t in tensors if t is not None], grad_y)


@pytest.mark.parametrize("backend", gpu_backends("tensor_fusion"))
@pytest.mark.parametrize("dtype", utils.DTYPES)
@pytest.mark.parametrize("batch, dims, out", [
    (32, (50, 50, 50), 50),      # the paper's
    (33, (7, 1, 50), 9), (5, (12, 300), 7), (3, (1, 600), 5),   # odd, wide last inputs (K tiles)
    (64, (300, 300, 8), 4),     # (d1 + 1)(d2 + 1) = 90,601 pairs: past the old grid axis 1 limit
])
@pytest.mark.parametrize("p", [0.0, 0.4])
def test_tensor_fusion_against_float64_with_the_philox_mask(device, backend, dtype, batch, dims, out, p):
    op = serve(backend, "tensor_fusion")
    inputs, weight, bias = _tfn(batch, dims, out, dtype, device)
    tensors = [t.requires_grad_() for t in [*inputs, weight, bias]]
    rng = rng_pair(2)
    y = op(inputs, weight, bias, p, rng.to(device))
    keep = philox.dropout_keep_mask((batch, weight.shape[1]), rng, 1 - p).to(device) if p else None
    ref = [t.detach().double().requires_grad_() for t in tensors]
    y_ref = mibcore.reference.tensor_fusion(ref[:len(dims)], ref[-2], ref[-1], dropout=p, keep_mask=keep)
    scale = max(1.0, math.sqrt(weight.shape[1]) / 50)
    close(y, y_ref, dtype, scale=scale)
    grad_y = torch.randn_like(y)
    for g, g_ref in zip(_grads(y, tensors, grad_y), _grads(y_ref, ref, grad_y.double())):
        close(g, g_ref, dtype, scale=scale * max(1.0, g_ref.abs().max().item()))


@pytest.mark.parametrize("backend", gpu_backends("tensor_fusion"))
def test_tensor_fusion_equals_cpu_backend_and_strided_arguments(device, backend):
    op = serve(backend, "tensor_fusion")
    inputs, weight, bias = _tfn(17, (6, 5, 9), 11, torch.float32, "cpu")
    strided = [torch.cat([x, x], 1)[:, ::2] for x in inputs]
    bias2 = torch.randn(11, 2)[:, 1]
    rng = rng_pair(3)
    y_cpu = mibcore.backends.implementation("tensor_fusion", "cpu")(inputs, weight, bias2, 0.5, rng)
    y = op([x.to(device) for x in strided], weight.to(device), bias2.to(device), 0.5, rng.to(device))
    torch.testing.assert_close(y.cpu(), y_cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", gpu_backends("tensor_fusion"))
def test_tensor_fusion_float32_is_ieee_unless_tf32(device, backend):
    serve(backend, "tensor_fusion")
    inputs, weight, bias = _tfn(64, (63, 63), 64, torch.float32, device)
    y_ref = mibcore.reference.tensor_fusion([x.double() for x in inputs], weight.double(), bias.double())
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with mibcore.backends.use(backend):
            y = MF.tensor_fusion(inputs, weight, bias)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert ((y.double() - y_ref).norm() / y_ref.norm()).item() < 1e-5


@pytest.mark.parametrize("backend", gpu_backends("tensor_fusion"))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tensor_fusion_autocast(device, backend, dtype):
    serve(backend, "tensor_fusion")
    inputs, weight, bias = _tfn(32, (20, 20, 20), 16, torch.float32, device)
    with torch.autocast("cuda", dtype=dtype):
        with mibcore.backends.use(backend):
            y = MF.tensor_fusion(inputs, weight, bias)
        with mibcore.backends.use("reference"):
            y_ref = MF.tensor_fusion(inputs, weight, bias)
    assert y.dtype == dtype
    close(y, y_ref, dtype, scale=2)


@pytest.mark.parametrize("backend", gpu_backends("tensor_fusion"))
def test_tensor_fusion_backward_is_deterministic(device, backend):
    serve(backend, "tensor_fusion")
    inputs, weight, _ = _tfn(64, (40, 40, 40), 32, torch.float32, device)
    tensors = [t.requires_grad_() for t in [*inputs, weight]]
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            with mibcore.backends.use(backend):
                y = MF.tensor_fusion(inputs, weight, dropout=0.3, generator=torch.Generator("cuda").manual_seed(5))
            runs.append(torch.autograd.grad(y.square().sum(), tensors))
    except RuntimeError as error:  # a backend with atomics must say so
        assert "deterministic" in str(error)
        return
    finally:
        torch.use_deterministic_algorithms(previous)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- low_rank_fusion


@pytest.mark.parametrize("backend", gpu_backends("low_rank_fusion"))
@pytest.mark.parametrize("dtype", utils.DTYPES)
@pytest.mark.parametrize("batch, dims, out, rank", [(32, (50, 50, 50), 50, 5), (33, (7, 1), 9, 3),
                                                    (512, (128, 128, 128), 128, 8)])
def test_low_rank_fusion_against_float64(device, backend, dtype, batch, dims, out, rank):
    serve(backend, "low_rank_fusion")
    inputs = [torch.randn(batch, d, device=device).to(dtype) for d in dims]
    factors = [(torch.randn(rank, d + 1, out, device=device) / (d + 1) ** 0.5).to(dtype) for d in dims]
    w, b = torch.randn(1, rank, device=device).to(dtype), torch.randn(1, out, device=device).to(dtype)
    tensors = [t.requires_grad_() for t in [*inputs, *factors, w, b]]
    with mibcore.backends.use(backend):
        y = MF.low_rank_fusion(inputs, factors, w, b)
    ref = [t.detach().double().requires_grad_() for t in tensors]
    n = len(dims)
    y_ref = mibcore.reference.low_rank_fusion(ref[:n], ref[n:2 * n], ref[-2], ref[-1])
    close(y, y_ref, dtype, scale=max(1.0, y_ref.abs().max().item()))
    grad_y = torch.randn_like(y)
    for g, g_ref in zip(_grads(y, tensors, grad_y), _grads(y_ref, ref, grad_y.double())):
        close(g, g_ref, dtype, scale=10 * max(1.0, g_ref.abs().max().item()))


# ---------------------------------------------------------------- dropout operators


@pytest.mark.parametrize("op", ["dropout", "dropout_add", "relu_dropout"])
@pytest.mark.parametrize("backend", gpu_backends("dropout"))
@pytest.mark.parametrize("dtype", utils.DTYPES)
def test_dropout_masks_equal_the_cpu_backend_bit_for_bit(device, op, backend, dtype):
    gpu = serve(backend, op)
    cpu = mibcore.backends.implementation(op, "cpu")
    x = torch.randn(4097, 33).to(dtype)
    h = torch.randn(4097, 33).to(dtype)
    rng = rng_pair(4)
    args = (x, h) if op == "dropout_add" else (x,)
    y_cpu = cpu(*args, 0.3, rng)
    y = gpu(*[a.to(device) for a in args], 0.3, rng.to(device))
    assert torch.equal((y.cpu() == 0), (y_cpu == 0))
    torch.testing.assert_close(y.cpu(), y_cpu, rtol=0, atol=0)


# ---------------------------------------------------------------- whole steps


def _step_model(device):
    torch.manual_seed(0)
    encoder = torch.nn.Linear(40, 2 * 16).to(device)
    fusion_weight = torch.nn.Parameter(torch.randn(8, 17 * 17, device=device) / 17)
    return encoder, fusion_weight


def _step(encoder, fusion_weight, x):
    mu, scale = encoder(x).chunk(2, dim=-1)
    z, kl = MF.reparameterize_kl(mu, scale)
    y = MF.tensor_fusion([z, MF.dropout(z, 0.1)], fusion_weight, dropout=0.2)
    return y.square().mean() + 0.1 * kl


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_cuda_graph_capture_and_replay_of_a_training_step(device, backend):
    for op in ("reparameterize_kl", "tensor_fusion", "dropout"):
        serve(backend, op)
    encoder, weight = _step_model(device)
    params = [*encoder.parameters(), weight]
    optimizer = torch.optim.SGD(params, lr=0.01)
    x = torch.randn(32, 40, device=device)
    with mibcore.backends.use(backend):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up (compiles the kernels) outside the capture
            for _ in range(2):
                optimizer.zero_grad(set_to_none=False)
                _step(encoder, weight, x).backward()
                optimizer.step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=False)
        with torch.cuda.graph(graph):
            loss = _step(encoder, weight, x)
            loss.backward()
            optimizer.step()
        before = [p.detach().clone() for p in params]
        losses = []
        for _ in range(3):
            graph.replay()
            losses.append(loss.item())
        torch.cuda.synchronize()
    assert all(math.isfinite(v) for v in losses)
    assert len(set(losses)) > 1  # fresh samples and updated parameters each replay
    assert any(not torch.equal(a, p) for a, p in zip(before, params))


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_torch_compile_reduce_overhead(device, backend):
    for op in ("reparameterize_kl", "tensor_fusion", "dropout"):
        serve(backend, op)
    encoder, weight = _step_model(device)
    x = torch.randn(32, 40, device=device)

    def deterministic_step(x):
        mu, scale = encoder(x).chunk(2, dim=-1)
        z, kl = MF.reparameterize_kl(mu, scale, sample=False)
        return MF.tensor_fusion([z, z], weight).square().mean() + kl

    with mibcore.backends.use(backend):
        eager = deterministic_step(x)
        compiled = torch.compile(deterministic_step, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):
            out = compiled(x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
