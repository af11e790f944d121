"""Functional API of mibcore: one function per operator.

Each function lives with its operator's spec (mibcore/ops/<op>.py): it checks its arguments once,
in Python, then runs the backend that mibcore.backends resolves (cached per operator, device type
and selection), before autograd records anything.
"""
from mibcore.ops import SPECS

for _name, _spec in SPECS.items():
    globals()[_name] = _spec.function
__all__ = list(SPECS)
del _name, _spec
