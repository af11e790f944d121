"""Argument checks of the public API (made once, in Python): every error names the argument at fault."""
import numbers

import torch


def _is_real(value):
    # Python and numpy numbers alike; a bool is not a number here.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, torch.Tensor))


def tensor(fn, name, value):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor, got {type(value).__name__}")
    return value


def floating(fn, name, value):
    tensor(fn, name, value)
    if not value.is_floating_point():
        raise TypeError(f"{fn}: `{name}` must be a floating-point tensor, got dtype {value.dtype}")
    return value


def like(fn, name, value, ref_name, ref, *, shape=True):
    """`value` must share `ref`'s dtype and device (and shape when asked)."""
    floating(fn, name, value)
    if shape and value.shape != ref.shape:
        raise ValueError(
            f"{fn}: `{name}` must have the shape of `{ref_name}` {list(ref.shape)}, got {list(value.shape)}"
        )
    if value.dtype != ref.dtype:
        raise TypeError(f"{fn}: `{name}` must have the dtype of `{ref_name}` ({ref.dtype}), got {value.dtype}")
    if value.device != ref.device:
        raise ValueError(f"{fn}: `{name}` must be on `{ref_name}`'s device ({ref.device}), got {value.device}")
    return value


def choice(fn, name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{fn}: `{name}` must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def probability(fn, name, value):
    if not _is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{fn}: `{name}` must be a number in [0, 1), got {value!r}")
    return float(value)


def finite_number(fn, name, value):
    if not _is_real(value) or value != value or abs(value) == float("inf"):
        raise ValueError(f"{fn}: `{name}` must be a finite number, got {value!r}")
    return float(value)


def positive_int(fn, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{fn}: `{name}` must be a positive int, got {value!r}")
    return int(value)


def generator(fn, value):
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{fn}: `generator` must be a torch.Generator or None, got {type(value).__name__}")
    return value


def flag(fn, name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: `{name}` must be a bool, got {type(value).__name__}")
    return value


def fusion_inputs(fn, inputs):
    """The inputs of a fusion operator: a list or tuple of 2 or 3 [B, d_i] tensors of one dtype
    and device with d_i >= 1; returns the d_i."""
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError(f"{fn}: `inputs` must be a list or tuple of 2 or 3 tensors [B, d_i]")
    if len(inputs) not in (2, 3):
        raise ValueError(f"{fn}: `inputs` must hold 2 or 3 tensors, got {len(inputs)}")
    first = floating(fn, "inputs[0]", inputs[0])
    for i, x in enumerate(inputs):
        like(fn, f"inputs[{i}]", x, "inputs[0]", first, shape=False)
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


def autocast_operands(*groups):
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


def index_product(fn, name, sizes, what):
    """The product of `sizes` (Python ints: exact), refused when it reaches 2^63: the kernels
    index `what` with int64 offsets, which would wrap around (and a loop over it never end)."""
    n = 1
    for s in sizes:  # (a loop: dynamo traces it with symbolic sizes)
        n *= s
    if n >= 2**63:
        raise ValueError(f"{fn}: `{name}` make {what} of {' x '.join(map(str, sizes))} elements, 2^63 or "
                         "more: int64 indices would overflow")
    return n


# The keys of a data split that are not modalities (mibcore.data): a modality may not take them.
RESERVED_MODALITY_NAMES = ("label", "id", "text_ids")


def modality_names(fn, name, names, at_least=2, at_most=None):
    """`names` (a list) as modality names: identifiers (they name submodules, keyword inputs and
    data keys such as train_<name>), unique, not reserved, between `at_least` and `at_most` of them."""
    bound = f"{at_least} to {at_most}" if at_most else f"at least {at_least}"
    if not at_least <= len(names) <= (at_most or len(names)):
        raise ValueError(f"{fn}: `{name}` must name {bound} modalities, got {len(names)} ({list(names)})")
    for m in names:
        if not isinstance(m, str) or not m.isidentifier():
            raise ValueError(f"{fn}: `{name}` must name modalities by identifiers (letters, digits, _), got {m!r}")
        if m in RESERVED_MODALITY_NAMES:
            raise ValueError(f"{fn}: `{name}`: {m!r} is not a modality name (reserved for the data's "
                             f"{', '.join(RESERVED_MODALITY_NAMES)})")
    return list(names)
