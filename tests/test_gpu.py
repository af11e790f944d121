"""What exists only on a GPU, for every backend that implements an operator there (compiled triton,
cuda): TF32, autocast to fp16/bf16 on CUDA, deterministic backward, dropout masks equal to the cpu
backend's bit for bit, CUDA-graph capture and reduce-overhead compile. The operators' contract on
CUDA (float64 oracle, every dtype, odd, strided and large shapes, Philox samples) is
tests/test_contract.py's, parametrized by device from the operators' specs.

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
from tests import utils

pytestmark = pytest.mark.gpu

PARAMS = mibcore.constants.PARAMETERIZATIONS
GPU_TOL = mibcore.ops._spec.TOLERANCES["cuda"]  # (rtol, atol) against a float64 oracle, per dtype


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
