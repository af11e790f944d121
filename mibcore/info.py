"""`python -m mibcore info`: versions, what was built, which backend serves which device."""
import importlib.util
import platform

import torch

import mibcore
from mibcore import _extension, backends, cpu_isa, ops
from mibcore.ops._spec import DEVICE_TYPES


def report():
    lines = [
        f"mibcore {mibcore.__version__}",
        f"python {platform.python_version()}  torch {torch.__version__}  (torch CUDA: {torch.version.cuda})",
    ]
    spec = importlib.util.find_spec("triton")
    if spec is not None:
        import triton

        lines.append(f"triton {triton.__version__}")
    else:
        lines.append("triton: not installed")
    build = _extension.load()
    if build is None:
        lines.append("extension mibcore._C: not built (fused cpu/cuda backends off)")
    else:
        lines.append("extension mibcore._C: " + ", ".join(f"{k}={v}" for k, v in build.items()))
        lines.append(f"CPU kernels' instruction set: {cpu_isa.current()} (this CPU supports up to "
                     f"{cpu_isa.supported()}; levels that run here: {', '.join(cpu_isa.available())}; "
                     "MIBCORE_CPU_ISA chooses a lower one)")
        cpu_ops = sorted(op for op in backends.BACKENDS["cpu"].ops)
        lines.append("  " + ", ".join(f"{op}={cpu_isa.current()}" for op in cpu_ops))
    lines.append(f"threads: {torch.get_num_threads()}  GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    lines.append("backend `auto` runs, per device and operator (the first of its order that serves it here):")
    for device in DEVICE_TYPES:
        picks = {}
        for op in ops.SPECS:
            order = [b for b in backends.auto_order(op, device) if backends.BACKENDS[b].serves(op, device)]
            picks.setdefault(" > ".join(order) or "none", []).append(op)
        for order, names in picks.items():
            lines.append(f"  {device}: {order}  ({', '.join(names)})")
    lines.append("operators per backend:")
    for name, backend in backends.BACKENDS.items():
        devices = ", ".join(backend.devices()) or "unavailable here"
        lines.append(f"  {name:9s} [{devices}] {', '.join(sorted(backend.ops))} - {backend.description}")
    lines.append(f"selected backend: {backends.current()}")
    return "\n".join(lines)
