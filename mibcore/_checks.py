"""Argument checks of the public API: every error names the argument at fault."""
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
