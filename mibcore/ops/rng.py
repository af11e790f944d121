"""Draws the (seed, offset) pair of one fused call from a torch generator.

Each fused call consumes one draw from `generator` (or the default generator of the
device), so `torch.manual_seed` makes runs reproducible. The pair is an int64 tensor of
2 elements on the tensors' device: the CUDA and Triton kernels read it on the device (no
host sync, CUDA-graph safe), and torch.compile traces the draw like any random op.
"""
import torch


def draw_rng(device, generator=None):
    """Returns tensor([seed, offset]) (int64, on `device`), both in [0, 2^62)."""
    if generator is not None and torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(
            f"generator is on {generator.device} but the tensors are on {device}; "
            "pass a generator of the tensors' device"
        )
    # randint, not Tensor.random_: dynamo traces the former and graph-breaks on the latter.
    return torch.randint(0, 2**62, (2,), dtype=torch.int64, device=device, generator=generator)
