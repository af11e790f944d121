"""`--cuda-graphs`: a whole training step (forward, loss, backward, Adam) captured in one CUDA graph
and replayed for each batch: one launch instead of hundreds, so that the host no longer limits the
step (torch's "whole network capture"; docs: torch.cuda.graph, CUDA Graphs in the CUDA semantics
notes).

  warm-up    the first WARMUP_STEPS steps run eagerly on a side stream (real training steps:
             they create Adam's state and load every kernel before the capture, as torch asks)
  capture    the next step is captured on that stream with static input buffers, then replayed;
             the batches are copied into the buffers from pinned host memory, asynchronously
  replay     each later batch of the captured shape: copy in, replay, the loss clone kept on the
             device (read every loss_every steps, step.LossReader)
  eager      a batch of another shape than the run's first (an epoch's last, smaller batch) runs
             eagerly, on the same weights, optimizer state and gradient buffers; so does every
             step after a capture that failed (a note on stderr says why)

The rng stays right: the fused operators draw their (seed, offset) with torch.randint on the
device's generator, which torch registers with the graph; each replay advances its Philox
offset, so every replay draws fresh dropout masks and samples, and a seed gives the same run.
Adam is the fused one with capturable=True (its step counts on the device; optimizer.py).
A beta schedule's KL weight is a device tensor refilled in place before each step
(beta_schedule.py), so each replay reads its step's value.
Not yet run on a GPU: its CPU tests drive the control flow with a stand-in for torch.cuda;
the capture itself is tests/test_train_step.py's gpu-marked tests.
"""
import sys

import torch

from mibcore.errors import UsageError
from mibcore.train.step import to_device

WARMUP_STEPS = 3


def check(config, device, world):
    """UsageError where config.cuda_graphs cannot run: off CUDA, or under DDP."""
    if not config.cuda_graphs:
        return
    if device.type != "cuda":
        raise UsageError(f"--cuda-graphs needs a CUDA device; this run's device is {device} "
                         "(drop --cuda-graphs, or use --device cuda)")
    if world > 1:
        raise UsageError("--cuda-graphs does not run under DDP (torchrun) yet; drop it or train on one GPU")


class GraphedStep:
    """step(*inputs, label) on host tensors -> the loss (a device tensor), as
    step.EagerStep, through one CUDA graph per run (see the module docstring). `cuda`: the
    torch.cuda module (tests pass a stand-in)."""

    def __init__(self, eager, device, cuda=torch.cuda):
        self.eager, self.device, self.cuda = eager, device, cuda
        self.stream = cuda.Stream(device)
        self.warmed, self.graph, self.static, self.loss, self.failed = 0, None, None, None, False
        self.shapes = None

    def __call__(self, *batch):
        shapes = [(t.shape, t.dtype) for t in batch]
        self.shapes = self.shapes or shapes  # the run's first batch: a full one, the graph's shape
        if self.failed:
            return self.eager(*batch)
        if shapes != self.shapes:
            # (once captured, set_to_none=False: the backward accumulates into the graph's gradient
            # buffers, zeroed first, rather than into new ones beside them)
            return self.eager(*batch, set_to_none=self.graph is None)
        if self.warmed < WARMUP_STEPS:
            self.warmed += 1
            return self._on_side_stream(lambda: self.eager(*batch))
        if self.graph is None:
            return self._capture(batch)
        for static, t in zip(self.static, batch):
            static.copy_(t.pin_memory() if t.device.type == "cpu" and self.device.type == "cuda" else t,
                         non_blocking=True)
        self.graph.replay()
        return self.loss.clone()

    def _on_side_stream(self, fn):
        self.stream.wait_stream(self.cuda.current_stream(self.device))
        with self.cuda.stream(self.stream):
            out = fn()
        self.cuda.current_stream(self.device).wait_stream(self.stream)
        return out

    def _capture(self, batch):
        static = to_device(batch, self.device)
        try:
            self.eager.optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients
            graph = self.cuda.CUDAGraph()
            with self.cuda.graph(graph, stream=self.stream):
                loss = self.eager(*static)
        except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager steps
            self.failed = True
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            print(f"mibcore: note: --cuda-graphs: capturing the training step failed ({type(error).__name__}: "
                  f"{reason}); training with eager steps", file=sys.stderr, flush=True)
            return self.eager(*static)
        self.graph, self.static, self.loss = graph, static, loss
        graph.replay()  # (the capture ran nothing: this is the batch's step)
        return loss.clone()
