"""Triton kernels of mibcore (installed as mibcore.kernels); see kernels/_math.py for the
per-element math they share with csrc/include. Imported lazily: only the triton backend needs them."""
