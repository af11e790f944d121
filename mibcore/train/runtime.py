"""Where and how a run computes: seeding, the DDP process group (torchrun; gloo on CPU), the
device a config names, and its autocast (AMP)."""
import contextlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from mibcore import backends
from mibcore.errors import UsageError, first_line


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_memory(device):
    """Bytes of memory of a device: a GPU's, or the machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def is_out_of_memory(error):
    """Whether an exception is an allocation that failed (numpy's, torch's CPU or CUDA allocator)."""
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in str(error) or "out of memory" in str(error)))


@contextlib.contextmanager
def memory_errors(options):
    """Turns a failed allocation into a UsageError naming the options that size it."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise UsageError(f"out of memory ({first_line(e)}): use smaller {options}") from e


def distributed():
    """(rank, world_size), initializing the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def config_device(config):
    """The device config.device names (auto: CUDA where there is one); UsageError if absent, or
    where MIBCORE_BACKEND names no backend (checked here, before any work)."""
    backends.current()
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise UsageError(f"device {config.device!r} is not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):  # (meta, mps, ...: no backend runs mibcore's operators there)
        raise UsageError(f"device {config.device!r}: mibcore runs on cpu and cuda devices (auto, cpu, cuda, cuda:N)")
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise UsageError(f"device {config.device!r}: this machine has {torch.cuda.device_count()} usable CUDA "
                         "devices (use --device cpu or auto)")
    return device


def process_device(config, world):
    """This process's device: under DDP on GPUs, the GPU torchrun gave it (LOCAL_RANK)."""
    device = config_device(config)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def native_bf16():
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(config, device):
    """The autocast context of config.amp on device (a no-op for amp='none')."""
    if config.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    if dtype == torch.float16 and device.type != "cuda":
        raise UsageError("amp='fp16' needs a GPU; use amp='bf16' on CPU")
    # (autocast's weight-cast cache must be off in a CUDA graph capture: torch's graph docs)
    return torch.autocast(device.type, dtype=dtype, cache_enabled=not config.cuda_graphs)
