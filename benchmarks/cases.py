"""Benchmark cases: an operator, a shape, and how to build inputs for each provider.

A provider is a backend name ('reference', 'cpu', 'triton', 'cuda'), 'compile' (the
reference under torch.compile) or, for tensor fusion on GPUs, 'cublas' (torch's GEMM on the
outer product materialized beforehand: the GEMMs alone, no dropout; a floor, not a drop-in).
Every other case calls the public functional API, so the timings include argument checks
and dispatch, as a user sees them.
"""
import dataclasses
import math
from typing import Callable

import torch

import mibcore
from mibcore import functional as MF
from mibcore import reference


@dataclasses.dataclass
class Case:
    op: str
    shape: str           # label, e.g. "32x50"
    kind: str            # "paper" or "scale"
    make: Callable       # device -> (fn(*tensors) -> tensor outputs, tensors requiring grad)
    bytes_moved: int     # forward + backward bytes at the memory floor (elementwise ops)
    flops: int           # forward + backward flops (GEMM ops); 0 for elementwise
    compile: bool = True  # also time torch.compile of the reference


def _dtype_label(dtype):
    return "" if dtype == torch.float32 else f" {str(dtype).removeprefix('torch.')}"


def _reparameterize_kl_case(rows, cols, kind, dtype=torch.float32):
    def make(device, provider):
        mu = torch.randn(rows, cols, device=device, dtype=dtype, requires_grad=True)
        scale = torch.randn(rows, cols, device=device, dtype=dtype, requires_grad=True)

        def fn(m, s):
            if provider == "compile":
                return _compiled_reference_reparameterize_kl(m, s)
            with mibcore.backends.use(provider):
                return MF.reparameterize_kl(m, s)

        return fn, (mu, scale)

    # 8 elements moved per element at the floor: forward reads mu, scale and writes z; backward
    # reads grad_z, mu, scale and writes both gradients (32 bytes in fp32).
    label = f"{rows}x{cols}" + _dtype_label(dtype)
    return Case("reparameterize_kl", label, kind, make, 8 * dtype.itemsize * rows * cols, 0)


def _reference_reparameterize_kl(m, s):
    return reference.reparameterize_kl(m, s)


_compiled_reference_reparameterize_kl = torch.compile(_reference_reparameterize_kl, dynamic=False)


def _tensor_fusion_case(batch, dims, out, dropout, kind, dtype=torch.float32):
    fused_dim = math.prod(d + 1 for d in dims)

    def make(device, provider):
        inputs = [torch.randn(batch, d, device=device, dtype=dtype, requires_grad=True) for d in dims]
        weight = (torch.randn(out, fused_dim, device=device) / fused_dim**0.5).to(dtype).requires_grad_()
        bias = torch.zeros(out, device=device, dtype=dtype, requires_grad=True)
        if provider == "cublas":  # the GEMMs alone, on the outer product materialized beforehand
            with torch.no_grad():
                fused = reference.outer_product(inputs)
            return (lambda z, w, b: torch.nn.functional.linear(z, w, b)), (fused.requires_grad_(), weight, bias)

        def fn(*tensors):
            *xs, w, b = tensors
            if provider == "compile":
                return _compiled_reference_tensor_fusion(xs, w, b, dropout)
            with mibcore.backends.use(provider):
                return MF.tensor_fusion(xs, w, b, dropout=dropout)

        return fn, (*inputs, weight, bias)

    label = f"B{batch} {'x'.join(map(str, dims))}->{out}" + (f" p={dropout}" if dropout else "") + _dtype_label(dtype)
    # forward GEMM 2*B*N*out, backward dW and d(outer) 2*B*N*out each.
    return Case("tensor_fusion", label, kind, make, 0, 6 * batch * fused_dim * out)


def _reference_tensor_fusion(xs, w, b, dropout):
    return reference.tensor_fusion(list(xs), w, b, dropout=dropout)


_compiled_reference_tensor_fusion = torch.compile(_reference_tensor_fusion, dynamic=False)


def _low_rank_fusion_case(batch, dims, out, rank, kind):
    def make(device, provider):
        inputs = [torch.randn(batch, d, device=device, requires_grad=True) for d in dims]
        factors = [(torch.randn(rank, d + 1, out, device=device) * 0.1).requires_grad_() for d in dims]
        rank_weights = torch.randn(1, rank, device=device, requires_grad=True)
        bias = torch.zeros(1, out, device=device, requires_grad=True)
        n = len(dims)

        def fn(*tensors):
            xs, fs, w, b = tensors[:n], tensors[n:2 * n], tensors[2 * n], tensors[2 * n + 1]
            if provider == "compile":
                return _compiled_reference_low_rank_fusion(xs, fs, w, b)
            with mibcore.backends.use(provider):
                return MF.low_rank_fusion(xs, fs, w, b)

        return fn, (*inputs, *factors, rank_weights, bias)

    label = f"B{batch} {'x'.join(map(str, dims))}->{out} r{rank}"
    flops = 6 * batch * rank * sum(d + 1 for d in dims) * out
    return Case("low_rank_fusion", label, kind, make, 0, flops)


def _reference_low_rank_fusion(xs, fs, w, b):
    return reference.low_rank_fusion(list(xs), list(fs), w, b)


_compiled_reference_low_rank_fusion = torch.compile(_reference_low_rank_fusion, dynamic=False)


def _train_step_case(fusion, batch=32, seq_len=50):
    """Forward + backward of a C-MIB training step at the paper's shapes (768-d text features,
    74-d audio, 47-d visual, T = 50, d = 50, hidden 1024), without a text backbone."""
    from mibcore import models

    def make(device, provider):
        torch.manual_seed(0)
        model = models.build("cmib", fusion=fusion).to(device)
        text = torch.randn(batch, seq_len, 768, device=device)
        audio = torch.randn(batch, seq_len, 74, device=device)
        visual = torch.randn(batch, seq_len, 47, device=device)
        label = torch.randn(batch, device=device)

        def fn(t, a, v):
            with mibcore.backends.use(provider):
                return model.loss(model(t, a, v), label)

        return fn, (text, audio, visual)

    return Case("train_step", f"cmib {fusion} B{batch} T{seq_len}", "paper", make, 0, 0, compile=False)


def all_cases(quick=False):
    cases = [
        _reparameterize_kl_case(32, 50, "paper"),
        _reparameterize_kl_case(4096, 1024, "scale"),
        _tensor_fusion_case(32, (50, 50, 50), 50, 0.5, "paper"),
        _tensor_fusion_case(64, (64, 64, 64), 128, 0.0, "scale"),
        _low_rank_fusion_case(32, (50, 50, 50), 50, 5, "paper"),
        _train_step_case("concat"),
        _train_step_case("tensor"),
    ]
    if not quick:
        cases += [
            _reparameterize_kl_case(1024, 512, "scale"),
            _reparameterize_kl_case(4096, 1024, "scale", torch.float16),
            _reparameterize_kl_case(4096, 1024, "scale", torch.bfloat16),
            _tensor_fusion_case(256, (32, 32, 32), 64, 0.5, "scale"),
            _tensor_fusion_case(32, (50, 50, 50), 50, 0.5, "scale", torch.float16),
            _tensor_fusion_case(32, (50, 50, 50), 50, 0.5, "scale", torch.bfloat16),
            _low_rank_fusion_case(512, (128, 128, 128), 128, 8, "scale"),
        ]
    return cases


def providers(case, device):
    """Providers to time for a case on `device`: the eager reference first, then the fused
    backends that implement its operator there (a training step: that serve the device; the
    Triton interpreter is excluded: it is a correctness tool, hundreds of times slower), then
    torch.compile of the reference."""
    names = ["reference"]
    for name in mibcore.backends.available(device):
        backend = mibcore.backends.BACKENDS[name]
        interpreted = name == "triton" and torch.device(device).type == "cpu"
        if name != "reference" and (case.op == "train_step" or case.op in backend.ops) and not interpreted:
            names.append(name)
    if case.op == "tensor_fusion" and torch.device(device).type == "cuda":
        names.append("cublas")  # the floor of the fused GEMMs: cuBLAS on the materialized product
    if case.compile:
        names.append("compile")
    return names
