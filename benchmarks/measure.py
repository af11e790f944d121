"""Timing, memory and roofline measurements (medians of repeated runs)."""
import gc
import statistics
import time

import torch


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device, repeats, warmup=3, setup=None, min_seconds=0.2, max_repeats=2000):
    """Median seconds of fn() over at least `repeats` runs, more for fast functions (until the
    timed runs add up to `min_seconds`, at most `max_repeats`): sub-millisecond medians need
    hundreds of samples on a noisy machine. setup() (untimed) runs before each. The garbage
    collector is off while timing, as in timeit: a collection inside one run is noise."""
    for _ in range(warmup):
        state = setup() if setup else None
        fn(state)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        times = []
        while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_repeats):
            state = setup() if setup else None
            _sync(device)
            start = time.perf_counter()
            fn(state)
            _sync(device)
            times.append(time.perf_counter() - start)
            del state
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(times)


def _outputs(result):
    return result if isinstance(result, (tuple, list)) else (result,)


def _grads_for(outputs):
    return [torch.ones_like(o) if o.is_floating_point() else None for o in outputs]


def time_modes(fn, tensors, device, repeats):
    """Median seconds of the forward, the backward alone, and forward + backward."""
    def forward(_):
        with torch.no_grad():
            fn(*tensors)

    def run_forward(_=None):
        outputs = _outputs(fn(*tensors))
        return outputs, _grads_for(outputs)

    def backward(state):
        outputs, grads = state
        torch.autograd.backward(outputs, grads)

    def full(_):
        backward(run_forward())

    def clear_grads():
        for t in tensors:
            t.grad = None

    return {
        "forward": median_time(forward, device, repeats),
        "backward": median_time(backward, device, repeats, setup=lambda: (clear_grads(), run_forward())[1]),
        "full": median_time(full, device, repeats, setup=clear_grads),
    }


def time_train(trainer, batches, device, repeats, split=True):
    """Median seconds of a training unit ("train": one step per batch of batches(), i.e. a step
    or an epoch) and, with `split`, of its parts on the first batch: "forward" (forward + loss,
    recording autograd as a step does; a no_grad forward would recompile a compiled model),
    "backward" alone, and "full" (forward + loss + backward, without the optimizer)."""
    times = {"train": median_time(lambda _: trainer.run(batches()), device, repeats, warmup=3 if split else 1)}
    if not split:
        return times
    first = next(iter(batches()))

    def forward(_=None):
        trainer.optimizer.zero_grad(set_to_none=True)
        return trainer.loss(*first)

    times["forward"] = median_time(forward, device, repeats)
    times["backward"] = median_time(lambda loss: loss.backward(), device, repeats, setup=forward)
    times["full"] = median_time(lambda _: forward().backward(), device, repeats)
    return times


def saved_for_backward_bytes(fn, tensors):
    """Bytes autograd keeps between forward and backward beyond the inputs, plus the outputs:
    the memory a forward costs until its backward runs."""
    inputs = {t.untyped_storage().data_ptr() for t in tensors}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in inputs:
            seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = _outputs(fn(*tensors))
    out_bytes = sum(o.numel() * o.element_size() for o in outputs)
    return sum(seen.values()) + out_bytes


def peak_memory_bytes(fn, tensors, device):
    """Peak device memory of forward + backward on CUDA; None on CPU (no allocator stats)."""
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    outputs = _outputs(fn(*tensors))
    torch.autograd.backward(outputs, _grads_for(outputs))
    return torch.cuda.max_memory_allocated() - base


def copy_bandwidth(device, megabytes=256):
    """Bytes per second of a large tensor copy (read + write), this machine's memory floor."""
    src = torch.empty(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    seconds = median_time(lambda _: dst.copy_(src), device, repeats=7)
    return 2 * src.numel() * 4 / seconds


def gemm_throughput(device, n=2048):
    """FLOP/s of an n x n x n fp32 matmul."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = median_time(lambda _: a @ b, device, repeats=5)
    return 2 * n**3 / seconds
