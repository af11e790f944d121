"""The search space of `mibcore tune`: a config file's `search` section, one entry per
TrainConfig field to search, checked before any trial runs (UsageError naming search.FIELD):

  search:
    lr: {low: 1e-4, high: 1e-2, log: true}   # a float range, sampled on a log scale
    beta: {low: 0, high: 0.01, step: 0.002}  # a float range on steps (both ends included)
    d: {low: 16, high: 64, step: 16}         # an int range (an int field's)
    fusion: {choices: [concat, tensor]}      # categorical, any field (no_ib: a list of lists)
    dropouts: [true, false]                  # a list: short for {choices: [...]}

Each value is checked as the config would be (lr > 0, a known fusion...). Optuna's categorical
values are scalars, so no_ib's lists travel as comma-joined strings (encode / decode).
"""
import contextlib
import dataclasses

from mibcore.errors import UsageError
from mibcore.train.config import TrainConfig

# Where and how the runs are made, not what they learn; tune sets out and seed (--out, --seeds).
NOT_SEARCHED = ("out", "seed", "resume", "progress", "quiet", "device")
RANGE_KEYS, CHOICE_KEYS = {"low", "high", "log", "step"}, {"choices"}
FIELDS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    kind: str             # int | float | categorical
    low: float = None
    high: float = None
    log: bool = False
    step: float = None
    choices: tuple = ()   # categorical: the field's values (no_ib's are tuples)

    def encoded(self):
        """The choices as Optuna stores them (scalars)."""
        return tuple(",".join(c) if isinstance(c, tuple) else c for c in self.choices)


def decode(name, value):
    """The field value of an Optuna parameter value."""
    if isinstance(FIELDS.get(name), tuple):
        return tuple(value.split(",")) if value else ()
    return value


def parse_space(search, base, where):
    """{field: Param} of a `search` section; base: the config it varies; where: the file's name."""
    if search is None:
        raise UsageError(f"{where}: no `search` section: tune needs the fields to search, e.g. "
                         "search: {lr: {low: 1e-4, high: 1e-2, log: true}}")
    if not isinstance(search, dict) or not search:
        raise UsageError(f"{where}: `search` must map config fields to ranges or choices, got {search!r}")
    return {name: _param(str(name), spec, base, f"{where}: search.{name}") for name, spec in search.items()}


def _param(name, spec, base, key):
    if name not in FIELDS:
        raise UsageError(f"{key}: not a config field (the fields are TrainConfig's, as in `train --help`)")
    if name in NOT_SEARCHED:
        raise UsageError(f"{key}: cannot be searched ({', '.join(NOT_SEARCHED)} are not; --seeds sets seeds)")
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise UsageError(f"{key}: expected {{low: L, high: H[, log: true | step: S]}} or {{choices: [...]}}, "
                         f"got {spec!r}")
    keys = set(spec)
    if keys & CHOICE_KEYS:
        if keys - CHOICE_KEYS:
            raise UsageError(f"{key}: choices go alone, without {sorted(keys - CHOICE_KEYS)}")
        return _categorical(name, spec["choices"], base, key)
    if keys - RANGE_KEYS:
        raise UsageError(f"{key}: unknown keys {sorted(keys - RANGE_KEYS)} (a range has low, high, log, step; "
                         "a categorical has choices)")
    return _range(name, spec, base, key)


def _range(name, spec, base, key):
    default = FIELDS[name]
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise UsageError(f"{key}: a {type(default).__name__} field takes choices, not a range")
    kind = "float" if isinstance(default, float) else "int"
    missing = {"low", "high"} - set(spec)
    if missing:
        raise UsageError(f"{key}: a range needs low and high (missing {', '.join(sorted(missing))})")
    low, high = _number(spec["low"], kind, f"{key}.low"), _number(spec["high"], kind, f"{key}.high")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise UsageError(f"{key}.log: true or false, got {log!r}")
    if not low < high:
        raise UsageError(f"{key}: low must be < high, got low {low!r} and high {high!r}")
    if step is not None:
        step = _number(step, kind, f"{key}.step")
        if log or not step > 0:
            raise UsageError(f"{key}.step: a number > 0, and not with log: true (got step {step!r}, log {log})")
        count = (high - low) / step
        if abs(count - round(count)) > 1e-9 * max(1.0, count):
            raise UsageError(f"{key}: high - low ({high - low!r}) is not a multiple of step ({step!r})")
    if log and low <= 0:
        raise UsageError(f"{key}: a log range needs low > 0, got {low!r}")
    for value in (low, high):
        _check_value(name, value, base, key)
    return Param(name, kind, low, high, log, step)


def _categorical(name, choices, base, key):
    if not isinstance(choices, list) or not choices:
        raise UsageError(f"{key}.choices: a non-empty list, got {choices!r}")
    default, values = FIELDS[name], []
    for choice in choices:
        if isinstance(default, float):
            choice = _number(choice, "float", f"{key}.choices")
        elif isinstance(default, tuple) and isinstance(choice, list):
            choice = tuple(choice)
        _check_value(name, choice, base, key)
        values.append(choice)
    if len(set(values)) != len(values):
        raise UsageError(f"{key}.choices: each value once, got {choices!r}")
    return Param(name, "categorical", choices=tuple(values))


def _number(value, kind, key):
    """An int (int fields) or float; YAML 1.1 reads 1e-4 as a string, which becomes its number."""
    if isinstance(value, str) and kind == "float":
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = (int, float) if kind == "float" else int
    if not isinstance(value, ok) or isinstance(value, bool):
        raise UsageError(f"{key}: expected {'a number' if kind == 'float' else 'an integer'}, got {value!r}")
    return float(value) if kind == "float" else value


def _check_value(name, value, base, key):
    """The config's own checks (type, range, choice) of one value of the field."""
    try:
        dataclasses.replace(base, **{name: value}).validate()
    except UsageError as e:
        raise UsageError(f"{key}: {value!r} is not a valid value ({e})") from None


def suggest(trial, space):
    """The trial's values of the searched fields (as TrainConfig takes them)."""
    values = {}
    for p in space.values():
        if p.kind == "float":
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log, step=p.step or 1)
        else:
            values[p.name] = decode(p.name, trial.suggest_categorical(p.name, p.encoded()))
    return values


def field_values(params):
    """A trial's params (as Optuna stores them) as config values."""
    return {name: decode(name, value) for name, value in params.items()}


def grid(space, where):
    """The grid sampler's space ({name: [values]}); UsageError for a range without steps."""
    values = {}
    for p in space.values():
        if p.kind == "categorical":
            values[p.name] = list(p.encoded())
        elif p.kind == "int":
            values[p.name] = list(range(p.low, p.high + 1, p.step or 1))
        elif p.step is not None:
            count = round((p.high - p.low) / p.step) + 1
            values[p.name] = [min(round(p.low + i * p.step, 12), p.high) for i in range(count)]
        else:
            raise UsageError(f"{where}: search.{p.name}: --sampler grid needs choices or a step (a continuous "
                             "range has no grid)")
    return values
