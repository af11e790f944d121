"""The fused reparameterize + KL operator: its function, spec, fakes and Triton autograd.

  mibcore::reparameterize_kl[_backward]         C++ (schemas and autograd csrc/ops/reparameterize_kl.cpp;
                                                kernels csrc/cpu, csrc/cuda)
  mibcore::reparameterize_kl_triton[_backward]  Triton (mibcore/kernels/reparameterize_kl.py)

Every forward returns z and the KL of each row (float32, or float64 for float64 inputs); the
functional API reduces the rows with torch ops, so the reduction and its gradient live in one
place (mibcore.reference.reduce_kl). The backward regenerates eps from the saved rng tensor.
"""
import itertools
from functools import partial
from typing import Optional

import torch

from mibcore import _checks, backends, constants, reference
from mibcore.constants import accumulation_dtype
from mibcore.ops._register import implementations, python_operator, register_cpp_fakes
from mibcore.ops._spec import Benchmark, Launch, OpSpec, Sample, dtype_suffix, meta, meta_rng, strided
from mibcore.ops.rng import draw_rng


def reparameterize_kl(
    mu,
    scale,
    *,
    parameterization="softplus",
    shift=-5.0,
    sample=True,
    reduction="mean",
    generator=None,
):
    """Reparameterized sample z = mu + std * eps and KL(N(mu, std^2) || N(0, I)).

    Args:
        mu, scale: tensors of one shape [..., D], floating point, on one device.
        parameterization: "softplus" (std = softplus(scale + shift), the paper with shift=-5),
            "logvar" (std = exp(scale / 2)) or "std" (std = scale, which must be > 0).
        shift: added to scale before softplus; ignored by the other parameterizations.
        sample: False returns z = mu exactly (deterministic evaluation); the KL is still computed.
        reduction: "none" (shape [...], summed over D), "sum", "mean" (over all elements, the
            paper's) or "batchmean" (sum over D, mean over the rest).
        generator: a torch.Generator of the tensors' device (default: the device's).

    Returns:
        (z, kl): z has mu's dtype; kl is float32 (float64 for float64 inputs).
    """
    fn = "reparameterize_kl"
    check_shapes(fn, mu, scale)
    _checks.choice(fn, "parameterization", parameterization, constants.PARAMETERIZATIONS)
    _checks.choice(fn, "reduction", reduction, constants.REDUCTIONS)
    shift = _checks.finite_number(fn, "shift", shift)
    _checks.flag(fn, "sample", sample)
    _checks.generator(fn, generator)
    if parameterization == "std" and mu.device.type == "cpu" and not torch.compiler.is_compiling():
        # (Skipped on GPUs, where it would cost a device sync each call: there std <= 0 gives NaN.)
        if bool((scale <= 0).any()):
            raise ValueError(f"{fn}: `scale` must be > 0 everywhere with parameterization='std'")
    return backends.runner(fn, mu.device)(mu, scale, parameterization, shift, sample, reduction, generator)


def check_shapes(fn, mu, scale):
    """The shapes reparameterize_kl relates, checked once for every caller: its public function,
    and the Triton operators and their fakes (as the C++ host code,
    csrc/include/mibcore/reparameterize_kl_host.h). (A `scale` of another shape was read out of
    bounds by the Triton operator.)"""
    _checks.floating(fn, "mu", mu)
    _checks.like(fn, "scale", scale, "mu", mu)
    if mu.dim() == 0:
        raise ValueError(f"{fn}: `mu` must have at least one dimension (the latent dimension), got a scalar")


def _check_forward(op, mu, scale, rng, parameterization, shift, sample):
    check_shapes(op, mu, scale)
    _checks.choice(op, "parameterization", parameterization, tuple(constants.PARAMETERIZATION_IDS.values()))


def _check_backward(op, grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample):
    _check_forward(op, mu, scale, rng, parameterization, shift, sample)
    # (As the C++ backward: a gradient broadcasts to its output's shape; anything else was read
    # out of bounds.)
    for name, grad, shape in (("grad_z", grad_z, mu.shape), ("grad_kl", grad_kl, mu.shape[:-1])):
        if grad is not None and not _broadcasts(grad.shape, shape):
            raise ValueError(f"{op}: `{name}` must have shape {list(shape)} (or one that broadcasts to it), "
                             f"got {list(grad.shape)}")


def _broadcasts(shape, to):
    return len(shape) <= len(to) and all(s in (1, t) for s, t in zip(reversed(shape), reversed(to)))


def _call_reference(mu, scale, parameterization, shift, sample, reduction, generator):
    return reference.reparameterize_kl(mu, scale, parameterization=parameterization, shift=shift, sample=sample,
                                       reduction=reduction, generator=generator)


def _call_fused(op, mu, scale, parameterization, shift, sample, reduction, generator):
    z, kl_rows = op(mu, scale, draw_rng(mu.device, generator), constants.PARAMETERIZATION_IDS[parameterization],
                    shift, sample)
    return z, reference.reduce_kl(kl_rows, reduction, mu.numel())


def _fake_forward(mu, scale, rng, parameterization, shift, sample):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape[:-1], dtype=accumulation_dtype(mu.dtype))


def _fake_backward(grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape)


register_cpp_fakes({
    "mibcore::reparameterize_kl": _fake_forward,
    "mibcore::reparameterize_kl_backward": _fake_backward,
})


def _triton_forward(
    mu: torch.Tensor, scale: torch.Tensor, rng: torch.Tensor, parameterization: int, shift: float, sample: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from mibcore.kernels import reparameterize_kl as kernels

    return kernels.forward(mu, scale, rng, parameterization, shift, sample)


def _triton_backward(
    grad_z: Optional[torch.Tensor],
    grad_kl: Optional[torch.Tensor],
    mu: torch.Tensor,
    scale: torch.Tensor,
    rng: torch.Tensor,
    parameterization: int,
    shift: float,
    sample: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    from mibcore.kernels import reparameterize_kl as kernels

    return kernels.backward(grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample)


def _setup_context(ctx, inputs, output):
    mu, scale, rng, *args = inputs
    ctx.save_for_backward(mu, scale, rng)
    ctx.args = args


def _gradients(ctx, backward_op, grad_z, grad_kl):
    mu, scale, rng = ctx.saved_tensors
    grad_mu, grad_scale = backward_op(grad_z, grad_kl, mu, scale, rng, *ctx.args)
    return grad_mu, grad_scale, None, None, None, None


python_operator(
    "reparameterize_kl_triton", _triton_forward, _triton_backward, fake_forward=_fake_forward,
    fake_backward=_fake_backward, setup_context=_setup_context, gradients=_gradients,
    check_forward=_check_forward, check_backward=_check_backward,
)


def _samples(device, dtype):
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, dtype=torch.float64, generator=g).to(dtype=dtype, device=device)

    out = []
    shapes = ((4, 7), (33,), (2, 3, 17), (0, 5))
    for i, (shape, parameterization) in enumerate(itertools.product(shapes, constants.PARAMETERIZATIONS)):
        mu, scale = randn(*shape), randn(*shape)
        if parameterization == "std":
            scale = scale.abs() + 0.1
        reduction = constants.REDUCTIONS[i % len(constants.REDUCTIONS)]
        kwargs = dict(parameterization=parameterization, reduction=reduction)
        label = f"{list(shape)} {parameterization} {reduction}"
        out.append(Sample(f"{label} eval", (mu, scale), {**kwargs, "sample": False}))
        if parameterization == constants.PARAMETERIZATIONS[i // len(constants.PARAMETERIZATIONS) % 3]:
            out.append(Sample(label, (mu, scale), kwargs, random=True))  # (one parameterization per shape)
    mu, scale = strided(randn(6, 9)), strided(randn(6, 9))
    out.append(Sample("strided batchmean", (mu, scale), dict(reduction="batchmean", sample=False)))
    out.append(Sample("strided sum, shift 0.1", (mu, scale), dict(reduction="sum", shift=0.1), random=True))
    if device != "cpu":  # the GPU kernels' vector widths, tails and multi-block rows
        for shape in ((33, 257), (4096, 1024)):
            mu, scale = randn(*shape), randn(*shape)
            out.append(Sample(f"{list(shape)} eval", (mu, scale), dict(reduction="none", sample=False)))
            out.append(Sample(f"{list(shape)}", (mu, scale), dict(reduction="none"), random=True))
    return out


def _benchmark(rows, cols, kind, dtype=torch.float32, quick=True):
    def make(device):
        mu, scale = torch.randn(2, rows, cols, device=device, dtype=dtype)
        return Sample(f"{rows}x{cols}", (mu, scale), random=True)

    # 8 elements moved per element at the floor: the forward reads mu, scale and writes z; the
    # backward reads grad_z, mu, scale and writes both gradients.
    return Benchmark(f"{rows}x{cols}" + dtype_suffix(dtype), kind, make, bytes_moved=8 * dtype.itemsize * rows * cols,
                     quick=quick)


# The bottleneck of the paper's models: batch 32, latent 50, softplus with shift -5, mean KL.
_PAPER = _benchmark(32, 50, "paper")


def _benchmarks():
    return (_PAPER, _benchmark(4096, 1024, "scale"), _benchmark(1024, 512, "scale", quick=False),
            *(_benchmark(4096, 1024, "scale", dtype, quick=False) for dtype in (torch.float16, torch.bfloat16)))


def _fuzz(st, tensors):
    @st.composite
    def samples(draw):
        rows, cols = draw(st.integers(0, 5)), draw(st.integers(1, 7))
        parameterization = draw(st.sampled_from(constants.PARAMETERIZATIONS))
        mu, scale = draw(tensors([(rows, cols), (rows, cols)]))
        if parameterization == "std":
            scale = scale.abs() + 0.1
        kwargs = dict(parameterization=parameterization, sample=False, reduction="none")
        return Sample(f"{rows}x{cols} {parameterization}", (mu, scale), kwargs, depth=(1, cols))
    return samples()


def _double_backward():
    g = torch.Generator().manual_seed(0)
    mu, scale = (torch.randn(3, 4, dtype=torch.float64, generator=g).requires_grad_() for _ in range(2))
    return (mu, scale), lambda mu, scale: reparameterize_kl(mu, scale, sample=False)[1]


# (rows, cols): the paper's bottleneck (B 32, d 50), the benchmarks' scale shapes, small and odd ones.
_LAUNCH_SHAPES = ((32, 50), (4096, 1024), (1024, 512), (33, 257), (3, 7), (1, 1))


def _launches():
    from mibcore.kernels import reparameterize_kl as k

    for (rows, cols), dtype in itertools.product(_LAUNCH_SHAPES, (torch.float32, torch.float16, torch.bfloat16,
                                                                   torch.float64)):
        e, n, kl_dtype = dtype.itemsize, rows * cols, accumulation_dtype(dtype)
        mu = meta(rows, cols, dtype=dtype)
        for code, sample in itertools.product((0, 1, 2), (True, False)):
            yield Launch(f"{rows}x{cols} P{code} sample={sample}", dtype, (
                ("forward", partial(k.forward, mu, mu, meta_rng(), code, -5.0, sample), 3 * e * n + 4 * rows, 0),
                ("backward", partial(k.backward, mu, meta(rows, dtype=kl_dtype), mu, mu, meta_rng(), code, -5.0,
                                     sample), 5 * e * n + 4 * rows, 0),
            ), report=(rows, cols) in ((32, 50), (4096, 1024)) and dtype in (torch.float32, torch.bfloat16)
               and code == 0 and sample)


SPECS = (OpSpec(
    "reparameterize_kl", reparameterize_kl,
    implementations("reparameterize_kl", _call_reference),
    _call_fused, _samples, _double_backward, paper_sample=_PAPER.make, fuzz=_fuzz, launches=_launches,
    benchmarks=_benchmarks, random_dtype=torch.float32,  # eps: Box-Muller in fp32 for every dtype
),)
