"""Triton kernels of mibcore (the subpackage mibcore.kernels); see mibcore/kernels/_math.py for the
per-element math they share with csrc/include. Imported lazily: only the triton backend needs them."""
