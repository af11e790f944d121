"""How much a data file may make the loader allocate.

HDF5 datasets and .npy members declare their shape and dtype in a header: a 14 KB HDF5 file
(chunks never written read as zeros) or a zip member's header can declare terabytes. Loaders
read each declaration first and charge it to a Budget, which refuses (DataError naming the key
and the size) once a file's arrays together would exceed half the memory available when loading
starts (the loaded arrays are copied once more, to float32 tensors). Where the available
memory cannot be read, DEFAULT_LIMIT applies.
"""
import math
import os

import numpy as np

from mibcore.errors import DataError

DEFAULT_LIMIT = 16 << 30  # bytes; where neither /proc/meminfo nor sysconf tells the memory
FRACTION = 0.5


def available_memory():
    """Bytes of memory available now: MemAvailable (Linux), bounded by a cgroup v2 limit, else the
    physical memory; None where none can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:  # a container's limit, which MemAvailable (the host's) does not show
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                found.append(max(int(limit) - int(g.read()), 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def memory_limit():
    available = available_memory()
    return DEFAULT_LIMIT if available is None else int(available * FRACTION)


def size_text(nbytes):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000


class Budget:
    """What one file's arrays will take, charged declaration by declaration."""

    def __init__(self, source, limit=None):
        self.source, self.limit, self.used = source, memory_limit() if limit is None else limit, 0

    def take(self, key, shape, dtype):
        nbytes = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize  # (Python ints: no overflow)
        if self.used + nbytes > self.limit:
            shape_text = " x ".join(map(str, shape)) or "a scalar"
            raise DataError(
                f"{self.source}: {key} declares {shape_text} {np.dtype(dtype)} ({size_text(nbytes)}), more than "
                f"loading may allocate ({size_text(self.limit - self.used)} left of {size_text(self.limit)}, "
                "half the memory available)")
        self.used += nbytes
