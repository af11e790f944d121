"""Host-side helpers shared by the Triton kernel wrappers."""
import contextlib

import torch


def device_context(t):
    """Makes t's GPU the current one for the launch (a no-op for CPU tensors in the interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
