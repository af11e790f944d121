"""The fused low-rank fusion (LMF) operator: its function, spec, fakes and Triton autograd.

  mibcore::low_rank_fusion[_backward]          C++ (schemas and autograd csrc/ops/low_rank_fusion.cpp;
                                               CPU kernel csrc/cpu/low_rank_fusion_cpu.cpp)
  mibcore::low_rank_fusion_triton[_backward]   Triton (mibcore/kernels/low_rank_fusion.py)

Autograd saves the inputs, factors and rank weights; the backward recomputes the per-modality
projections (one small GEMM each) instead of saving them. (No CUDA kernel: `auto` picks
triton on GPUs.)
"""
import itertools
from functools import partial

import torch

from mibcore import _checks, backends, reference
from mibcore.ops._register import implementations, python_operator, register_cpp_fakes
from mibcore.ops._spec import Benchmark, Launch, OpSpec, Sample, meta, strided


def low_rank_fusion(inputs, factors, rank_weights, bias):
    """Low-rank multimodal fusion (LMF).

    y = sum_r rank_weights[r] * prod_i ([1; x_i] @ factors[i][r]) + bias.

    Args:
        inputs: 2 or 3 tensors [B, d_i].
        factors: one tensor [rank, d_i + 1, out] per input.
        rank_weights: [rank] or [1, rank] (the LMF code's fusion_weights).
        bias: [out] or [1, out] (the LMF code's fusion_bias).
    """
    fn = "low_rank_fusion"
    inputs, factors, (rank_weights, bias) = _checks.autocast_operands(inputs, factors, [rank_weights, bias])
    check_shapes(fn, inputs, factors, rank_weights, bias)
    return backends.runner(fn, inputs[0].device)(inputs, factors, rank_weights, bias)


def check_shapes(fn, inputs, factors, rank_weights, bias):
    """The shapes low_rank_fusion relates, checked once for every caller: its public function, and
    the Triton operators and their fakes (`bias` None: the backward's). Returns (B, rank, out).
    (A factor narrower than its input corrupted the heap in the Triton backward.)"""
    dims = _checks.fusion_inputs(fn, inputs)
    if not isinstance(factors, (list, tuple)) or len(factors) != len(inputs):
        raise ValueError(f"{fn}: `factors` must hold one tensor per input ({len(inputs)})")
    rank, out = None, None
    for i, (factor, d) in enumerate(zip(factors, dims)):
        _checks.like(fn, f"factors[{i}]", factor, "inputs[0]", inputs[0], shape=False)
        rank = factor.shape[0] if rank is None and factor.dim() == 3 else rank
        out = factor.shape[2] if out is None and factor.dim() == 3 else out
        if factor.dim() != 3 or list(factor.shape) != [rank, d + 1, out]:
            raise ValueError(f"{fn}: `factors[{i}]` must be [rank, {d + 1}, out] = [{rank}, {d + 1}, {out}], "
                             f"got {list(factor.shape)}")
    _checks.like(fn, "rank_weights", rank_weights, "inputs[0]", inputs[0], shape=False)
    if list(rank_weights.shape) not in ([rank], [1, rank]):
        raise ValueError(f"{fn}: `rank_weights` must be [{rank}] or [1, {rank}], got {list(rank_weights.shape)}")
    if bias is not None:
        _checks.like(fn, "bias", bias, "inputs[0]", inputs[0], shape=False)
        if list(bias.shape) not in ([out], [1, out]):
            raise ValueError(f"{fn}: `bias` must be [{out}] or [1, {out}], got {list(bias.shape)}")
    return inputs[0].shape[0], rank, out


def _check_backward(op, grad_y, inputs, factors, rank_weights):
    batch, _, out = check_shapes(op, inputs, factors, rank_weights, None)
    if list(grad_y.shape) != [batch, out]:
        raise ValueError(f"{op}: `grad_y` must be [B, out] = [{batch}, {out}], got {list(grad_y.shape)}")


def _call_reference(inputs, factors, rank_weights, bias):
    return reference.low_rank_fusion(list(inputs), list(factors), rank_weights, bias)


def _call_fused(op, inputs, factors, rank_weights, bias):
    return op(inputs, factors, rank_weights, bias)


def _fake_forward(inputs, factors, rank_weights, bias):
    return factors[0].new_empty(inputs[0].shape[0], factors[0].shape[2])


def _fake_backward(grad_y, inputs, factors, rank_weights):
    return (
        [torch.empty_like(x) for x in inputs],
        [torch.empty_like(f) for f in factors],
        rank_weights.new_empty(factors[0].shape[0]),
        rank_weights.new_empty(factors[0].shape[2]),
    )


register_cpp_fakes({
    "mibcore::low_rank_fusion": _fake_forward,
    "mibcore::low_rank_fusion_backward": _fake_backward,
})


def _triton_forward(
    inputs: list[torch.Tensor], factors: list[torch.Tensor], rank_weights: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    from mibcore.kernels import low_rank_fusion as kernels

    return kernels.forward(inputs, factors, rank_weights, bias)


def _triton_backward(
    grad_y: torch.Tensor, inputs: list[torch.Tensor], factors: list[torch.Tensor], rank_weights: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    from mibcore.kernels import low_rank_fusion as kernels

    return kernels.backward(grad_y, inputs, factors, rank_weights)


def _setup_context(ctx, inputs, output):
    xs, factors, rank_weights, bias = inputs
    ctx.save_for_backward(*xs, *factors, rank_weights)
    ctx.n = len(xs)
    ctx.shapes = (rank_weights.shape, bias.shape)


def _gradients(ctx, backward_op, grad_y):
    saved = ctx.saved_tensors
    xs, factors, rank_weights = saved[: ctx.n], saved[ctx.n : 2 * ctx.n], saved[2 * ctx.n]
    grad_x, grad_f, grad_w, grad_b = backward_op(grad_y, list(xs), list(factors), rank_weights)
    w_shape, b_shape = ctx.shapes
    return list(grad_x), list(grad_f), grad_w.reshape(w_shape), grad_b.reshape(b_shape)


python_operator(
    "low_rank_fusion_triton", _triton_forward, _triton_backward, fake_forward=_fake_forward,
    fake_backward=_fake_backward, setup_context=_setup_context, gradients=_gradients,
    check_forward=check_shapes, check_backward=_check_backward,
)


def _samples(device, dtype):
    g = torch.Generator().manual_seed(0)

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, dtype=torch.float64, generator=g) * scale).to(dtype=dtype, device=device)

    out = []
    shapes = [(4, (2, 3), 5, 2), (5, (3, 2, 4), 7, 3), (1, (1, 7), 1, 1), (0, (3, 4), 2, 2), (9, (17, 5), 33, 4)]
    if device != "cpu":
        shapes += [(32, (50, 50, 50), 50, 5), (512, (128, 128, 128), 128, 8)]
    for batch, dims, out_features, rank in shapes:
        inputs = [randn(batch, d) for d in dims]
        factors = [randn(rank, d + 1, out_features, scale=0.5) for d in dims]
        label = f"B{batch} {dims}->{out_features} r{rank}"
        out.append(Sample(label, (inputs, factors, randn(rank), randn(out_features))))
    inputs = [strided(randn(3, 4)), strided(randn(3, 2))]
    factors = [strided(randn(2, 5, 6)), strided(randn(2, 3, 6))]
    out.append(Sample("strided, [1, rank] and [1, out]", (inputs, factors, randn(1, 2), strided(randn(1, 6)))))
    return out


def _benchmark(batch, dims, out, rank, kind, quick=True):
    def make(device):
        inputs = [torch.randn(batch, d, device=device) for d in dims]
        factors = [torch.randn(rank, d + 1, out, device=device) * 0.1 for d in dims]
        return Sample(label, (inputs, factors, torch.randn(1, rank, device=device), torch.zeros(1, out, device=device)))

    label = f"B{batch} {'x'.join(map(str, dims))}->{out} r{rank}"
    # per factor: the forward's [B, d+1] x [d+1, r*out] GEMM, twice that in the backward
    return Benchmark(label, kind, make, flops=6 * batch * rank * sum(d + 1 for d in dims) * out, quick=quick)


# The LMF head at the paper's sizes: three modalities of 50 features, batch 32, 50 outputs, rank 5.
_PAPER = _benchmark(32, (50, 50, 50), 50, 5, "paper")


def _benchmarks():
    return _PAPER, _benchmark(512, (128, 128, 128), 128, 8, "scale", quick=False)


def _fuzz(st, tensors):
    @st.composite
    def samples(draw):
        batch, out, rank = draw(st.integers(0, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
        dims = draw(st.lists(st.integers(1, 4), min_size=2, max_size=3))
        shapes = [(batch, d) for d in dims] + [(rank * (d + 1), out) for d in dims] + [(1, rank), (1, out)]
        drawn = draw(tensors(shapes))
        inputs, flat_factors, (w, b) = drawn[:len(dims)], drawn[len(dims):-2], drawn[-2:]
        factors = [f.reshape(rank, d + 1, out) for f, d in zip(flat_factors, dims)]
        return Sample(f"B{batch} {dims}->{out} r{rank}", (inputs, factors, w, b), depth=(rank * (max(dims) + 1),))
    return samples()


def _double_backward():
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_()
            for shape in ((3, 2), (3, 3), (2, 3, 4), (2, 4, 4), (2,), (4,))]
    return args, lambda a, b, fa, fb, w, bias: low_rank_fusion([a, b], [fa, fb], w, bias)


# (batch, modality dims, out, rank); the first two in the launch report.
_LAUNCH_SHAPES = ((32, (50, 50, 50), 50, 5), (512, (128, 128, 128), 128, 8), (32, (50, 50), 50, 4),
                  (1, (1, 7), 1, 1))


def _launches():
    from mibcore.kernels import low_rank_fusion as k

    for (batch, dims, out, rank), dtype in itertools.product(
        _LAUNCH_SHAPES, (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    ):
        e = dtype.itemsize
        inputs = [meta(batch, d, dtype=dtype) for d in dims]
        factors = [meta(rank, d + 1, out, dtype=dtype) for d in dims]
        w, b = meta(1, rank, dtype=dtype), meta(1, out, dtype=dtype)
        factor_bytes, io = e * rank * out * sum(d + 1 for d in dims), e * batch * (sum(dims) + out)
        flops = 2 * batch * rank * out * sum(d + 1 for d in dims)
        yield Launch(f"B{batch} {'x'.join(map(str, dims))}->{out} r{rank}", dtype, (
            ("forward", partial(k.forward, inputs, factors, w, b), factor_bytes + io, flops),
            # (the backward recomputes the projections, then two gradient GEMMs)
            ("backward", partial(k.backward, meta(batch, out, dtype=dtype), inputs, factors, w),
             2 * factor_bytes + 2 * io, 3 * flops),
        ), report=dtype == torch.float32 and (batch, dims, out, rank) in _LAUNCH_SHAPES[:2])


SPECS = (OpSpec(
    "low_rank_fusion", low_rank_fusion,
    implementations("low_rank_fusion", _call_reference, cuda=False),
    _call_fused, _samples, _double_backward, paper_sample=_PAPER.make, fuzz=_fuzz, launches=_launches,
    benchmarks=_benchmarks,
    missing={"cuda": "no CUDA C++ kernel: the rank-r GEMMs are small; `auto` picks triton on GPUs"},
),)
