"""Host syncs: the dispatcher ops that make the host wait for the device (a value read back, or an
output whose size depends on the data). A training step that makes none keeps a GPU queue full
and can be captured in a CUDA graph; `no_host_sync()` fails at the first one (on CPU tensors the
ops are those of a CUDA run, so a CPU test checks a GPU step's Python path)."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# aten ops that read a device value on the host (item, bool(t), float(t), torch.equal, ...) or
# size their output from the data (nonzero, masked_select, unique, repeat_interleave without
# output_size: counted whatever its arguments).
SYNC_OPS = frozenset({
    "aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal", "aten.allclose",
    "aten.nonzero", "aten.masked_select", "aten._unique2", "aten.unique_dim", "aten.unique_consecutive",
    "aten.repeat_interleave.Tensor",
})


def is_sync(func, args=(), kwargs=None):
    """Whether an op call syncs the host with the device: a SYNC_OPS op, or a copy of a device
    tensor to the host (`.cpu()`, `.tolist()` on CUDA; on CPU tensors `.tolist()` is no op)."""
    name = str(func)
    if name in SYNC_OPS or name.rsplit(".", 1)[0] in SYNC_OPS:
        return True
    if name.startswith(("aten._to_copy", "aten.copy_")) and args:
        source = args[1] if name.startswith("aten.copy_") else args[0]
        target = args[0].device if name.startswith("aten.copy_") else (kwargs or {}).get("device")
        return (getattr(source, "device", None) is not None and source.device.type != "cpu"
                and target is not None and torch.device(target).type == "cpu")
    return False


class HostSyncError(AssertionError):
    pass


class no_host_sync(TorchDispatchMode):
    """Raises HostSyncError at the first host-syncing op run inside the block."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if is_sync(func, args, kwargs):
            raise HostSyncError(f"{func} syncs the host with the device")
        return func(*args, **(kwargs or {}))
