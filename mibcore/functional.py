"""Functional API of mibcore: validates arguments, picks the backend, runs the operator.

The backend is chosen here (mibcore.backends), before autograd records anything.
"""
import torch

from mibcore import _checks, backends, constants, reference
from mibcore.ops.rng import draw_rng

__all__ = ["reparameterize_kl", "tensor_fusion", "low_rank_fusion", "dropout", "dropout_add", "relu_dropout"]


@torch.compiler.assume_constant_result
def _backend_for(op, device):
    # Resolved once per compiled graph under torch.compile (the selection is plain Python
    # state that dynamo cannot guard on): change backends outside compiled regions.
    return backends.resolve(op, device)


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
    _checks.floating(fn, "mu", mu)
    _checks.like(fn, "scale", scale, "mu", mu)
    if mu.dim() == 0:
        raise ValueError(f"{fn}: `mu` must have at least one dimension (the latent dimension), got a scalar")
    _checks.choice(fn, "parameterization", parameterization, reference.PARAMETERIZATIONS)
    _checks.choice(fn, "reduction", reduction, reference.REDUCTIONS)
    shift = _checks.finite_number(fn, "shift", shift)
    _checks.flag(fn, "sample", sample)
    _checks.generator(fn, generator)
    if parameterization == "std" and mu.device.type == "cpu" and not torch.compiler.is_compiling():
        # (Skipped on GPUs, where it would cost a device sync each call: there std <= 0 gives NaN.)
        if bool((scale <= 0).any()):
            raise ValueError(f"{fn}: `scale` must be > 0 everywhere with parameterization='std'")

    backend = _backend_for(fn, mu.device)
    if backend == "reference":
        return reference.reparameterize_kl(
            mu,
            scale,
            parameterization=parameterization,
            shift=shift,
            sample=sample,
            reduction=reduction,
            generator=generator,
        )
    rng = draw_rng(mu.device, generator)
    z, kl_rows = backends.implementation(fn, backend)(
        mu, scale, rng, constants.PARAMETERIZATION_IDS[parameterization], shift, sample
    )
    return z, reference.reduce_kl(kl_rows, reduction, mu.numel())


def _check_fusion_inputs(fn, inputs):
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError(f"{fn}: `inputs` must be a list or tuple of 2 or 3 tensors [B, d_i]")
    if len(inputs) not in (2, 3):
        raise ValueError(f"{fn}: `inputs` must hold 2 or 3 tensors, got {len(inputs)}")
    first = _checks.floating(fn, "inputs[0]", inputs[0])
    for i, x in enumerate(inputs):
        _checks.like(fn, f"inputs[{i}]", x, "inputs[0]", first, shape=False)
        if x.dim() != 2:
            raise ValueError(f"{fn}: `inputs[{i}]` must be [B, d] (2 dimensions), got shape {list(x.shape)}")
        if x.shape[0] != first.shape[0]:
            raise ValueError(
                f"{fn}: `inputs[{i}]` must be [B, d] with B = {first.shape[0]} (from inputs[0]), "
                f"got {list(x.shape)}"
            )
        if x.shape[1] == 0:  # (the Triton kernels computed a wrong product for a factor of [1] alone)
            raise ValueError(f"{fn}: `inputs[{i}]` must have at least one feature (d >= 1), got {list(x.shape)}")
    return [x.shape[1] for x in inputs]


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
    inputs, (weight,), (bias,) = _autocast_operands(inputs, [weight], [bias])
    dims = _check_fusion_inputs(fn, inputs)
    fused_dim = 1
    for d in dims:  # (a loop, not a generator expression: dynamo traces loops)
        fused_dim *= d + 1
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
    dropout = _checks.probability(fn, "dropout", dropout)
    _checks.flag(fn, "training", training)
    _checks.generator(fn, generator)
    backend = _backend_for(fn, inputs[0].device)
    if backend == "reference":
        return reference.tensor_fusion(
            list(inputs), weight, bias, dropout=dropout, training=training, generator=generator
        )
    rng = draw_rng(inputs[0].device, generator)
    return backends.implementation(fn, backend)(inputs, weight, bias, dropout if training else 0.0, rng)


def _autocast_operands(*groups):
    """Under autocast, operators with a weight GEMM take autocast's dtype (as F.linear would),
    on every backend; the fused kernels still accumulate in fp32. Each group is a sequence of
    tensors (or None); anything else is left for the argument checks to report."""
    tensors = [t for group in groups if isinstance(group, (list, tuple)) for t in group if isinstance(t, torch.Tensor)]
    if not tensors or not torch.is_autocast_enabled(tensors[0].device.type):
        return groups
    dtype = torch.get_autocast_dtype(tensors[0].device.type)
    # As autocast itself: float64 is not an autocast dtype and stays float64.
    cast = lambda t: (  # noqa: E731
        t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64 else t
    )
    return tuple([cast(t) for t in group] if isinstance(group, (list, tuple)) else group for group in groups)


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
    inputs, factors, (rank_weights, bias) = _autocast_operands(inputs, factors, [rank_weights, bias])
    dims = _check_fusion_inputs(fn, inputs)
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
    _checks.like(fn, "bias", bias, "inputs[0]", inputs[0], shape=False)
    if list(bias.shape) not in ([out], [1, out]):
        raise ValueError(f"{fn}: `bias` must be [{out}] or [1, {out}], got {list(bias.shape)}")
    backend = _backend_for(fn, inputs[0].device)
    if backend == "reference":
        return reference.low_rank_fusion(list(inputs), list(factors), rank_weights, bias)
    return backends.implementation(fn, backend)(inputs, factors, rank_weights, bias)


def _check_dropout_args(fn, x, p, training, generator):
    _checks.floating(fn, "x", x)
    p = _checks.probability(fn, "p", p)
    _checks.flag(fn, "training", training)
    _checks.generator(fn, generator)
    return p


def dropout(x, p, *, training=True, generator=None):
    """Inverted dropout: x * keep / (1 - p), the keep decisions from Philox (one (seed, offset)
    draw per call; element j of the row-major flattened x is kept iff its 24-bit uniform is
    <= 1 - p). The mask is never stored: the backward regenerates it. Identity (x itself) when
    not training or p = 0; else a new contiguous tensor of x's dtype (computed in fp32, fp64 for
    fp64)."""
    fn = "dropout"
    p = _check_dropout_args(fn, x, p, training, generator)
    if not training or p == 0.0:
        return x
    backend = _backend_for(fn, x.device)
    if backend == "reference":
        return reference.dropout(x, p, generator=generator)
    return backends.implementation(fn, backend)(x, p, draw_rng(x.device, generator))


def dropout_add(x, h, p, *, training=True, generator=None):
    """x + dropout(h, p) in one pass (the residual pattern); `h`'s mask as `dropout(h)`'s."""
    fn = "dropout_add"
    p = _check_dropout_args(fn, h, p, training, generator)
    _checks.like(fn, "x", x, "h", h)
    if not training or p == 0.0:
        return x + h
    backend = _backend_for(fn, h.device)
    if backend == "reference":
        return reference.dropout_add(x, h, p, generator=generator)
    return backends.implementation(fn, backend)(x, h, p, draw_rng(h.device, generator))


def relu_dropout(x, p, *, training=True, generator=None):
    """dropout(relu(x), p) in one pass; the backward needs only the output (no mask, no x)."""
    fn = "relu_dropout"
    p = _check_dropout_args(fn, x, p, training, generator)
    if not training or p == 0.0:
        return torch.relu(x)
    backend = _backend_for(fn, x.device)
    if backend == "reference":
        return reference.relu_dropout(x, p, generator=generator)
    return backends.implementation(fn, backend)(x, p, draw_rng(x.device, generator))
