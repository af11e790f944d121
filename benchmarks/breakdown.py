"""Where a training step's time goes: torch.profiler self CPU time grouped into components.

Each profiled op's self time goes to the first component whose pattern matches a name in its
chain (the op, its parent ops, and the scope of the module that ran it: attention, as
nn.MultiheadAttention's ops have no op of their own to tell them apart from other GEMMs). A
backward op inherits the chain of the forward op that created its autograd node (the same
sequence number), so the backward of attention is attention. Time outside any op (Python,
the profiler itself) is the wall time minus the sum, reported as "unattributed".
"""
import re
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ATTENTION_SCOPE = "bench::attention"

# (component, pattern over the chain's names), first match wins: dropout inside attention is
# dropout, an optimizer's elementwise ops are the optimizer.
COMPONENTS = [
    ("optimizer", r"^Optimizer\."),
    ("dropout / bernoulli", r"dropout|bernoulli"),
    ("attention", re.escape(ATTENTION_SCOPE) + r"|scaled_dot_product|multi_head_attention"),
    ("conv projections", r"conv"),
    ("layernorm", r"layer_norm"),
    ("TFN / LMF kernels", r"tensor_fusion|low_rank_fusion"),
    ("reparameterize + KL", r"reparameterize|softplus|randn|normal_"),
    ("linear / GEMMs", r"addmm|::mm$|mmbackward|matmul|linear|bmm"),
    ("copies / transposes",
     r"copy|clone|contiguous|transpose|permute|::cat$|catbackward|::t$|::to$|index|select|slice|expand|stack"),
    ("compiled region (fused kernels)", r"compiled|inductor"),
]
OTHER = "other (elementwise, reductions, views)"
NAMES = [name for name, _ in COMPONENTS] + [OTHER, "unattributed (Python, dispatch)"]


def _component(chain):
    for name, pattern in COMPONENTS:
        if any(re.search(pattern, n, re.IGNORECASE) for n in chain):
            return name
    return OTHER


def _scope_modules(model):
    """Forward hooks that open a profiler scope around every nn.MultiheadAttention call."""
    handles, scopes = [], []

    def enter(module, args):
        scope = record_function(ATTENTION_SCOPE)
        scope.__enter__()
        scopes.append(scope)

    def leave(module, args, output):
        scopes.pop().__exit__(None, None, None)

    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _chain(event):
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    return names


def profile_step(trainer, batch, steps=3):
    """Per-component milliseconds per training step (self CPU time), over `steps` steps after
    one unprofiled warm-up; includes "wall" (ms per step while profiled). A compiled model gets
    no attention scope (a hook added after compiling would recompile it)."""
    trainer.step(*batch)
    handles = [] if trainer.compiled else _scope_modules(trainer.model)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step(*batch)
            wall = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
    events = prof.events()
    forward_chain = {}
    for e in events:
        chain = _chain(e)
        if e.sequence_nr >= 0 and not any("evaluate_function" in n for n in chain):
            forward_chain.setdefault(e.sequence_nr, chain)  # events are in start order: outermost first
    totals = dict.fromkeys(NAMES, 0.0)
    for e in events:
        chain = _chain(e)
        node = next((a for a in _ancestors(e) if "evaluate_function" in a.name), None)
        if node is not None:
            chain = chain + forward_chain.get(node.sequence_nr, [])
        totals[_component(chain)] += e.self_cpu_time_total / 1e3
    out = {name: ms / steps for name, ms in totals.items()}
    out["wall"] = 1e3 * wall / steps
    out["unattributed (Python, dispatch)"] = max(out["wall"] - sum(totals.values()) / steps, 0.0)
    return out


def _ancestors(event):
    while event is not None:
        yield event
        event = event.cpu_parent
