"""Ops and predicted CUDA launches of one C-MIB training step: `python -m benchmarks --step-ops`.

A dispatch mode (OpCounter) counts the dispatcher ops of one step (zero_grad, forward, loss,
backward, fused Adam), per phase and per component (breakdown.py's split, by op name; attention's
GEMMs, softmax and masks count as GEMMs and elementwise: a dispatcher op has no module scope),
with mibcore's fused-op calls, rng draws and host syncs counted apart. Nothing is timed: the
counts are the device's (the same ops run on CPU as on CUDA), so no GPU is needed.

Predicted CUDA launches (LAUNCH RULE; an estimate of what the host issues, not a measurement):
  - views, metadata and allocations (view, transpose, slice, expand, empty, ...): 0
  - a host sync (_local_scalar_dense, ...): 0 (counted as a sync)
  - torch's _foreach_* and _fused_adam_: multi_tensor_apply's batching (at most 110/64/48/36/30
    tensors per launch for 1/2/3/4/5 tensor lists, 65,536-element chunks, 320 chunks per launch)
  - a mibcore C++ operator (the cpu backend's; the cuda backend serves the same op on a GPU):
    CUDA_LAUNCHES (its kernels plus the wrapper's torch calls: padding, zeroed accumulators)
  - a mibcore Triton operator: its Triton launches (recorded, not run) plus the torch ops of its
    host code (counted by this rule)
  - any other aten op: 1 (a GEMM may take 2 with split-K; a fused elementwise op is 1)
With --cuda-graphs the host issues one graph replay, the 4 input copies and the loss's clone.
The reference backend's bernoulli / normal draws and the fused ops' randint draws are the rng.
"""
import contextlib
import math

import torch
from torch._library.custom_ops import _maybe_get_opdef
from torch.utils._python_dispatch import TorchDispatchMode

import mibcore
from mibcore import models
from mibcore.kernels import _launch
from mibcore.train.host_sync import is_sync
from mibcore.train.optimizer import adam

from . import breakdown

PHASES = ("forward", "loss", "backward", "optimizer")
# The launches of the cuda backend's operators where they are not 1 (csrc/cuda/*.cpp): tensor
# fusion pads its three factors (ones + cat each), and its forward splits the contraction at
# small batches (the step's B 32: the kernel and the in-order sum of the splits, 2 launches;
# mibcore/tensor_fusion_plan.h); its backward zeroes its input gradients, unpads them (clone)
# and sums the bias gradient; reparameterize_kl zeroes its KL rows.
CUDA_LAUNCHES = {"mibcore::tensor_fusion": 8, "mibcore::tensor_fusion_backward": 15, "mibcore::reparameterize_kl": 2}
GRAPH_LAUNCHES = 6  # --cuda-graphs: one replay, the 4 input copies, the loss's clone
NO_LAUNCH = frozenset({
    "view", "_unsafe_view", "_reshape_alias", "as_strided", "t", "transpose", "permute", "expand", "slice", "select",
    "unsqueeze", "squeeze", "alias", "detach", "split", "split_with_sizes", "unbind", "narrow", "empty", "empty_like",
    "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "is_same_size", "view_as", "unflatten",
    "reshape", "flatten", "diagonal", "movedim", "_has_compatible_shallow_copy_type",
})
RNG = ("randint", "bernoulli", "normal", "rand", "uniform")
MAX_TENSORS = (110, 64, 48, 36, 30)  # multi_tensor_apply's tensors per launch, for 1..5 lists
CHUNK, MAX_CHUNKS = 65536, 320


def multi_tensor_launches(lists):
    """Launches of one multi_tensor_apply over `lists` (lists of tensors of the same sizes)."""
    max_tensors = MAX_TENSORS[min(len(lists), len(MAX_TENSORS)) - 1]
    launches, tensors, chunks = 0, 0, 0
    for t in lists[0]:
        tensors += 1
        n_chunks = max(math.ceil(t.numel() / CHUNK), 1)
        for c in range(n_chunks):
            chunks += 1
            last = c == n_chunks - 1
            if chunks == MAX_CHUNKS or (last and tensors == max_tensors):
                launches, chunks, tensors = launches + 1, 0, (0 if last else 1)
    return launches + (chunks > 0)


def _short(func):
    return func._schema.name.split("::")[1]


def predicted_launches(func, args):
    """The LAUNCH RULE for one aten op (mibcore operators: OpCounter)."""
    name = _short(func)
    if name in NO_LAUNCH or is_sync(func, args):
        return 0
    if name.startswith(("_foreach_", "_fused_adam")):
        lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
        # (fused Adam: params, grads, exp_avg, exp_avg_sq; its step counts are not a list of its own)
        return multi_tensor_launches(lists[:4] if name.startswith("_fused_adam") else lists) if lists else 1
    return 1


class OpCounter(TorchDispatchMode):
    """Records (phase, op name, component, launches, kind) for each dispatcher op; set `phase`
    before each part of the step. A mibcore Triton operator's host code runs under a child
    counter (its torch ops are launches of that operator, not ops of the step)."""

    def __init__(self, records=None, inside=None):
        super().__init__()
        self.records = [] if records is None else records
        self.inside, self.phase = inside, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name.startswith("profiler::"):  # (record_function's markers: no op of the step)
            return func(*args, **kwargs)
        if self.inside is not None:  # the host code of a fused operator: its launches
            out = func(*args, **kwargs)
            self.records.append(("launch", predicted_launches(func, args)))
            return out
        kind = ("fused" if name.startswith("mibcore::") else "rng" if _short(func).startswith(RNG)
                else "sync" if is_sync(func, args, kwargs) else "view" if _short(func) in NO_LAUNCH else "op")
        opdef = _maybe_get_opdef(name) if kind == "fused" else None
        if opdef is not None:  # a Python (Triton) operator: its launches recorded, its torch ops counted
            inner = OpCounter(inside=name)
            with _launch.recording() as triton, inner:
                out = opdef._init_fn(*args, **kwargs)
            launches = len(triton) + sum(n for _, n in inner.records)
        else:
            out = func(*args, **kwargs)
            launches = CUDA_LAUNCHES.get(name, 1) if kind == "fused" else predicted_launches(func, args)
        chain = [name] + (["Optimizer.step"] if self.phase == "optimizer" else [])
        self.records.append((self.phase, name, breakdown._component(chain), launches, kind))
        return out


def count_step(backend, fusion="tensor", batch=32, seq_len=50, **sizes):
    """The records of one C-MIB training step (the paper's model and shapes, or MIBConfig `sizes`;
    counted after one uncounted step, so that Adam's state exists) on the CPU under `backend`
    (Triton kernels recorded, not run: no interpreter time)."""
    torch.manual_seed(0)
    model = models.build("cmib", fusion=fusion, mode="faithful", **sizes).train()
    optimizer = adam(model.parameters(), lr=2e-5)
    c = model.config
    text, audio, visual = (torch.randn(batch, seq_len, n) for n in (c.text_dim, c.audio_dim, c.visual_dim))
    label = torch.randn(batch)
    counter = OpCounter()
    with mibcore.backends.use(backend), _launch.recording():  # (Triton kernels recorded, not run)
        for counting in (False, True):
            optimizer.zero_grad(set_to_none=True)
            with counter if counting else contextlib.nullcontext():
                counter.phase = "forward"
                out = model(text, audio, visual)
                counter.phase = "loss"
                loss = model.loss(out, label)
                counter.phase = "backward"
                loss.backward()
                counter.phase = "optimizer"
                optimizer.step()
    return counter.records


def summary(records):
    """Ops per phase and in all, of which views (and allocations), fused-op calls, rng draws and
    host syncs; predicted launches."""
    out = {phase: sum(r[0] == phase for r in records) for phase in PHASES}
    out["ops"] = len(records)
    for kind in ("view", "fused", "rng", "sync"):
        out[kind] = sum(r[4] == kind for r in records)
    out["launches"] = sum(r[3] for r in records)
    return out


GPU_NAMES = {"reference": "reference", "cpu": "cuda", "triton": "triton"}


def backends_here():
    """The backends whose step is counted: the reference, and the fused ones built here."""
    return [b for b in ("reference", "cpu", "triton") if b in mibcore.backends.available("cpu")]


def report(fusion="tensor"):
    """The tables of `python -m benchmarks --step-ops` (the paper's shapes)."""
    counts = {b: count_step(b, fusion) for b in backends_here()}
    lines = [f"Dispatcher ops per C-MIB training step ({fusion} fusion, batch 32, T 50, all dropouts, fused Adam), "
             "counted on the CPU; CUDA launches predicted (benchmarks/step_ops.py's LAUNCH RULE)", "",
             "| backend (on a GPU) | forward | loss | backward | optimizer | ops | of which views | fused-op calls "
             "| rng draws | host syncs | launches | launches with --cuda-graphs |", "|" + " --- |" * 12]
    for backend, records in counts.items():
        s = summary(records)
        lines.append(f"| {backend} ({GPU_NAMES[backend]}) | " + " | ".join(
            str(s[k]) for k in (*PHASES, "ops", "view", "fused", "rng", "sync", "launches")) + f" | {GRAPH_LAUNCHES} |")
    if "triton" not in counts:
        lines.append("\n(triton: not served on this machine's CPU; run with TRITON_INTERPRET=1 to count it: its "
                     "kernels are recorded, not run)")
    lines += ["", "Ops / predicted launches per component (breakdown.py's split, by op name)", "",
              "| component | " + " | ".join(counts) + " |", "|" + " --- |" * (len(counts) + 1)]
    for component in breakdown.NAMES[:-1]:
        cells = [f"{sum(r[2] == component for r in rs)} / {sum(r[3] for r in rs if r[2] == component)}"
                 for rs in counts.values()]
        if any(c != "0 / 0" for c in cells):
            lines.append(f"| {component} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
