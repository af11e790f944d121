"""The fused operators: one module per operator, mibcore/ops/<op>.py, holding its public
function, its OpSpec (mibcore/ops/_spec.py), its fake tensors and its Triton operators with their
autograd (the C++ operators' autograd sits beside their kernels in csrc/).

SPECS (operator name -> OpSpec) is collected from every module of this package that declares
`SPECS`: adding an operator adds its module and nothing else. `register(spec)` adds one from
outside the package (a plugin, or the toy operator of tests/test_adding_an_operator.py).
"""
import importlib
import pkgutil

SPECS = {}


def register(spec):
    """Adds an operator; its name must be new. Returns the spec."""
    if spec.name in SPECS:
        raise ValueError(f"an operator named {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    return spec


def _collect():
    for module in pkgutil.iter_modules(__path__):  # (sorted by name)
        if module.name.startswith("_") or module.name == "rng":
            continue
        specs = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SPECS", None)
        if specs is None:
            raise ImportError(f"mibcore.ops.{module.name} declares no SPECS (every operator module must)")
        for spec in specs:
            register(spec)


_collect()
