"""The fused tensor-fusion operator (TFN + Linear): its function, spec, fakes and Triton autograd.

  mibcore::tensor_fusion[_backward]          C++ (schemas and autograd csrc/ops/tensor_fusion.cpp;
                                             kernels csrc/cpu, csrc/cuda)
  mibcore::tensor_fusion_triton[_backward]   Triton (mibcore/kernels/tensor_fusion.py)

Autograd saves the inputs, the weight and the rng tensor only: the backward regenerates the
outer-product tiles and the dropout mask. No [B, prod(d_i + 1)] tensor is ever allocated.
"""
import itertools
import math
from functools import partial

import torch

from mibcore import _checks, backends, reference
from mibcore.ops._register import implementations, python_operator, register_cpp_fakes
from mibcore.ops._spec import Benchmark, Launch, OpSpec, Sample, dtype_suffix, meta, meta_rng, strided
from mibcore.ops.rng import draw_rng


def tensor_fusion(inputs, weight, bias=None, *, dropout=0.0, training=True, generator=None):
    """Tensor fusion (TFN) followed by a Linear layer.

    linear(dropout(flatten(outer([1; x_1], [1; x_2], ...))), weight, bias), flattened row-major
    with the first input most significant, exactly as the TFN code of the MIB repo and MMSA.

    Args:
        inputs: 2 or 3 tensors [B, d_i] of one dtype and device.
        weight: [out, prod(d_i + 1)]; bias: [out] or None.
        dropout: inverted dropout probability on the outer product (applied when training).
        generator: a torch.Generator for the dropout mask.
    """
    fn = "tensor_fusion"
    inputs, (weight,), (bias,) = _checks.autocast_operands(inputs, [weight], [bias])
    check_shapes(fn, inputs, weight, bias)
    dropout = _checks.probability(fn, "dropout", dropout)
    _checks.flag(fn, "training", training)
    _checks.generator(fn, generator)
    return backends.runner(fn, inputs[0].device)(inputs, weight, bias, dropout if training else 0.0, generator)


def check_shapes(fn, inputs, weight, bias):
    """The shapes tensor_fusion relates, checked once for every caller: its public function, and
    the Triton operators and their fakes (as the C++ host code does,
    csrc/include/mibcore/tensor_fusion_host.h). Returns (B, out)."""
    dims = _checks.fusion_inputs(fn, inputs)
    # (B at least 1: the weight's columns alone must be countable too)
    sizes = [max(inputs[0].shape[0], 1)] + [d + 1 for d in dims]
    fused_dim = _checks.index_product(fn, "inputs", sizes, "a [B, prod(d_i + 1)] outer product") // sizes[0]
    _checks.like(fn, "weight", weight, "inputs[0]", inputs[0], shape=False)
    if weight.dim() != 2 or weight.shape[1] != fused_dim:
        raise ValueError(
            f"{fn}: `weight` must be [out, {fused_dim}] (prod(d_i + 1) for input dims {dims}), "
            f"got {list(weight.shape)}"
        )
    if bias is not None:
        _checks.like(fn, "bias", bias, "inputs[0]", inputs[0], shape=False)
        if list(bias.shape) != [weight.shape[0]]:
            raise ValueError(f"{fn}: `bias` must be [{weight.shape[0]}] (weight's out), got {list(bias.shape)}")
    return inputs[0].shape[0], weight.shape[0]


def _check_forward(op, inputs, weight, bias, dropout, rng):
    check_shapes(op, inputs, weight, bias)
    _checks.probability(op, "dropout", dropout)


def _check_backward(op, grad_y, inputs, weight, dropout, rng):
    batch, out = check_shapes(op, inputs, weight, None)
    _checks.probability(op, "dropout", dropout)
    if list(grad_y.shape) != [batch, out]:
        raise ValueError(f"{op}: `grad_y` must be [B, out] = [{batch}, {out}], got {list(grad_y.shape)}")


def _call_reference(inputs, weight, bias, dropout, generator):
    return reference.tensor_fusion(list(inputs), weight, bias, dropout=dropout, generator=generator)


def _call_fused(op, inputs, weight, bias, dropout, generator):
    return op(inputs, weight, bias, dropout, draw_rng(inputs[0].device, generator))


def _fake_forward(inputs, weight, bias, dropout, rng):
    return weight.new_empty(inputs[0].shape[0], weight.shape[0])


def _fake_backward(grad_y, inputs, weight, dropout, rng):
    return [torch.empty_like(x) for x in inputs], torch.empty_like(weight), weight.new_empty(weight.shape[0])


register_cpp_fakes({
    "mibcore::tensor_fusion": _fake_forward,
    "mibcore::tensor_fusion_backward": _fake_backward,
})


def _triton_forward(
    inputs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None, dropout: float, rng: torch.Tensor
) -> torch.Tensor:
    from mibcore.kernels import tensor_fusion as kernels

    return kernels.forward(inputs, weight, bias, dropout, rng)


def _triton_backward(
    grad_y: torch.Tensor, inputs: list[torch.Tensor], weight: torch.Tensor, dropout: float, rng: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    from mibcore.kernels import tensor_fusion as kernels

    return kernels.backward(grad_y, inputs, weight, dropout, rng)


def _setup_context(ctx, inputs, output):
    xs, weight, bias, dropout, rng = inputs
    ctx.save_for_backward(*xs, weight, rng)
    ctx.dropout = dropout
    ctx.has_bias = bias is not None


def _gradients(ctx, backward_op, grad_y):
    *xs, weight, rng = ctx.saved_tensors
    grad_inputs, grad_weight, grad_bias = backward_op(grad_y, xs, weight, ctx.dropout, rng)
    return list(grad_inputs), grad_weight, grad_bias if ctx.has_bias else None, None, None


python_operator(
    "tensor_fusion_triton", _triton_forward, _triton_backward, fake_forward=_fake_forward,
    fake_backward=_fake_backward, setup_context=_setup_context, gradients=_gradients,
    check_forward=_check_forward, check_backward=_check_backward,
)


def _samples(device, dtype):
    g = torch.Generator().manual_seed(0)

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, dtype=torch.float64, generator=g) * scale).to(dtype=dtype, device=device)

    out = []
    shapes = [(4, (2, 3), 5), (5, (3, 2, 4), 7), (1, (1, 7), 1), (0, (3, 4), 2), (3, (2, 2, 70), 3)]
    if device != "cpu":  # the paper's; wide last inputs (K tiles); (d1 + 1)(d2 + 1) past the old grid limit
        shapes += [(32, (50, 50, 50), 50), (33, (7, 1, 50), 9), (5, (12, 300), 7), (3, (1, 600), 5),
                   (64, (300, 300, 8), 4)]
    for batch, dims, out_features in shapes:
        n = math.prod(d + 1 for d in dims)
        inputs, weight = [randn(batch, d) for d in dims], randn(out_features, n, scale=n ** -0.5)
        bias = randn(out_features)
        label = f"B{batch} {dims}->{out_features}"
        out.append(Sample(label, (inputs, weight, bias)))
        out.append(Sample(f"{label} p=0.3", (inputs, weight, bias), {"dropout": 0.3}, random=True))
    inputs = [strided(randn(3, 4)), strided(randn(3, 2))]
    weight, bias = strided(randn(6, 15, scale=0.25)), randn(6, 2)[:, 0]  # (bias: stride 2)
    out.append(Sample("strided, no bias", (inputs, weight)))
    out.append(Sample("strided p=0.5", (inputs, weight, bias), {"dropout": 0.5}, random=True))
    out.append(Sample("eval p=0.5", (inputs, weight, bias), {"dropout": 0.5, "training": False}))
    return out


def _benchmark(batch, dims, out, dropout, kind, dtype=torch.float32, quick=True):
    n = math.prod(d + 1 for d in dims)
    label = f"B{batch} {'x'.join(map(str, dims))}->{out}" + (f" p={dropout}" if dropout else "")

    def make(device):
        inputs = [torch.randn(batch, d, device=device, dtype=dtype) for d in dims]
        weight = (torch.randn(out, n, device=device) * n**-0.5).to(dtype)
        bias = torch.zeros(out, device=device, dtype=dtype)
        return Sample(label, (inputs, weight, bias), {"dropout": dropout}, random=dropout > 0)

    # the forward GEMM 2*B*N*out; the backward's dW and d(outer product) 2*B*N*out each
    return Benchmark(label + dtype_suffix(dtype), kind, make, flops=6 * batch * n * out, quick=quick)


# The paper's TFN head: three modalities of 50 features, batch 32, 50 outputs, dropout 0.5.
_PAPER = _benchmark(32, (50, 50, 50), 50, 0.5, "paper")


def _benchmarks():
    return (_PAPER, _benchmark(64, (64, 64, 64), 128, 0.0, "scale"),
            _benchmark(256, (32, 32, 32), 64, 0.5, "scale", quick=False),
            *(_benchmark(32, (50, 50, 50), 50, 0.5, "scale", dtype, quick=False)
              for dtype in (torch.float16, torch.bfloat16)))


def _gemm_floor(sample):
    inputs, weight, bias = sample.args
    with torch.no_grad():
        fused = reference.outer_product(list(inputs))
    return (lambda z, w, b: torch.nn.functional.linear(z, w, b)), (fused.requires_grad_(), weight, bias)


def _fuzz(st, tensors):
    @st.composite
    def samples(draw):  # (a zero-width input is refused on every backend)
        batch, out = draw(st.integers(0, 4)), draw(st.integers(1, 5))
        dims = draw(st.lists(st.integers(0, 4), min_size=2, max_size=3))
        n = math.prod(d + 1 for d in dims)
        *inputs, weight, bias = draw(tensors([(batch, d) for d in dims] + [(out, n), (out, 1)]))
        return Sample(f"B{batch} {dims}->{out}", (inputs, weight, bias[:, 0]), depth=(n,))  # (a strided bias)
    return samples()


def _double_backward():
    g = torch.Generator().manual_seed(0)
    a, b, w = (torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_()
               for shape in ((3, 2), (3, 3), (2, 12)))
    return (a, b, w), lambda a, b, w: tensor_fusion([a, b], w)


# (batch, modality dims, out): paper, the benchmarks' scale shapes, wide last inputs (300,
# 600: tiled along K), 2 inputs, a weight over 2^31 elements, the smallest case.
_LAUNCH_SHAPES = (
    (32, (50, 50, 50), 50), (64, (64, 64, 64), 128), (256, (32, 32, 32), 64), (512, (32, 32, 32), 64),
    (128, (128, 128), 128), (32, (50, 50, 300), 50), (32, (50, 600), 50), (128, (600, 600), 64),
    (32, (50, 50), 50), (64, (600, 600, 600), 16), (1, (1, 7), 1),
)
_REPORTED = {((32, (50, 50, 50), 50), 0.5), ((64, (64, 64, 64), 128), 0.0), ((256, (32, 32, 32), 64), 0.5)}


def _launches():
    from mibcore.kernels import tensor_fusion as k

    for (batch, dims, out), dtype, p in itertools.product(
        _LAUNCH_SHAPES, (torch.float32, torch.float16, torch.bfloat16, torch.float64), (0.0, 0.5)
    ):
        e, n = dtype.itemsize, math.prod(d + 1 for d in dims)
        inputs = [meta(batch, d, dtype=dtype) for d in dims]
        weight, bias = meta(out, n, dtype=dtype), meta(out, dtype=dtype)
        small = e * (batch * sum(dims) + batch * out)  # inputs and outputs, beside the weight
        label = f"B{batch} {'x'.join(map(str, dims))}->{out}" + (f" p={p}" if p else "")
        for tf32 in (False, True) if dtype == torch.float32 else (False,):
            yield Launch(label + (" tf32" if tf32 else ""), dtype, (
                ("forward", _with_tf32(tf32, partial(k.forward, inputs, weight, bias, p, meta_rng())),
                 e * out * n + small, 2 * batch * n * out),
                ("backward", _with_tf32(tf32, partial(k.backward, meta(batch, out, dtype=dtype), inputs, weight, p,
                                                      meta_rng())), 2 * e * out * n + 2 * small, 4 * batch * n * out),
            ), report=not tf32 and dtype in (torch.float32, torch.bfloat16) and ((batch, dims, out), p) in _REPORTED)


def _with_tf32(enabled, call):
    def run():
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = enabled
        try:
            return call()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    return run


SPECS = (OpSpec(
    "tensor_fusion", tensor_fusion,
    implementations("tensor_fusion", _call_reference),
    _call_fused, _samples, _double_backward, paper_sample=_PAPER.make, fuzz=_fuzz, launches=_launches,
    benchmarks=_benchmarks, gemm_floor=_gemm_floor,
    # `auto` on GPUs: the Triton kernels first. They run the GEMMs on tensor cores (tl.dot, fp32
    # accumulation) and split the N contraction over enough programs to fill the GPU. The CUDA
    # forward splits it too (csrc/include/mibcore/tensor_fusion_plan.h: 2 launches, the kernel and
    # the in-order sum of the splits, where it splits) with WMMA for fp16/bf16 and 4 x 4 FMA tiles
    # for fp32/fp64; its backward is 16 x 16 SIMT tiles. Compiled, not yet run on a GPU: kept as
    # the explicit `cuda` backend.
    auto_order={"cuda": ("triton", "cuda", "reference")},
    # fp32 sums over up to 815,409 products on GPUs: the error grows like sqrt(depth) / 50
    tolerances={"cuda": {torch.float32: (1.5e-4, 1.5e-5)}},
),)
