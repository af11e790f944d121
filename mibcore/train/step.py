"""One training step (forward, loss, backward, optimizer) without a host sync, and the reader of
its losses: the losses stay on the device and are read back every `loss_every` steps and at the
epoch's end, so the host queues steps ahead of the device instead of waiting for each loss.

A non-finite loss is still caught, at the next read, with its exact step: the window's losses are
read together. By then the steps after it have updated the weights, but nothing was saved: the
checkpoint on disk is that of the previous epoch, and the run stops with DivergedError."""
import math

import torch

from mibcore.errors import DivergedError
from mibcore.train.runtime import autocast


class EagerStep:
    """step(*inputs, label) -> the loss (a detached device tensor); no host sync. The inputs:
    one per modality in the model's order (the paper's: text, audio, visual). The batch's
    tensors may be on the host (copied to the device by to_device)."""

    def __init__(self, model, ddp_model, optimizer, scaler, config, device, beta=None):
        """beta: the KL weight tensor that a beta schedule refills before each step (in place, so
        that a captured CUDA graph reads each step's value), or None: the model's config.beta."""
        self.model, self.ddp_model, self.optimizer, self.scaler = model, ddp_model, optimizer, scaler
        self.config, self.device, self.beta = config, device, beta

    def __call__(self, *batch, set_to_none=True):
        *inputs, label = to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=set_to_none)
        with autocast(self.config, self.device):
            out = self.ddp_model(*inputs)  # through DDP, which all-reduces the gradients
            # (beta passed only where scheduled: a constant run calls loss(out, label) as it always has)
            loss = self.model.loss(out, label) if self.beta is None else self.model.loss(out, label, beta=self.beta)
        self.scaler.scale(loss.float()).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def to_device(tensors, device):
    """Host tensors on `device`: for CUDA, through pinned memory and an asynchronous copy (the
    host does not wait for the copy; pinned pages are what lets it not wait)."""
    if device.type != "cuda":
        return tuple(t.to(device) for t in tensors)
    return tuple(t.pin_memory().to(device, non_blocking=True) if t.device.type == "cpu" else t.to(device)
                 for t in tensors)


class LossReader:
    """Collects the steps' losses (device tensors) and reads them back every `every` steps and at
    the epoch's end (read_all); raises DivergedError for the first non-finite one."""

    def __init__(self, config, epoch, n_steps):
        self.config, self.epoch, self.n_steps = config, epoch, n_steps
        self.window, self.first_step = [], 1
        self.total, self.count = 0.0, 0

    def add(self, loss, batch_size):
        self.window.append((loss, batch_size))
        if len(self.window) >= self.config.loss_every:
            self.read()

    def read(self):
        """One sync for the whole window: the losses stacked and copied to the host together."""
        if not self.window:
            return
        values = torch.stack([loss.float().reshape(()) for loss, _ in self.window]).tolist()
        for i, (value, (_, size)) in enumerate(zip(values, self.window)):
            if not math.isfinite(value):
                self._diverged(value, self.first_step + i)
            self.total += value * size
            self.count += size
        self.first_step += len(self.window)
        self.window = []

    def mean(self):
        """The mean loss over the epoch's samples (after reading what is left)."""
        self.read()
        return self.total / max(self.count, 1)

    def _diverged(self, value, step):
        config, epoch = self.config, self.epoch
        kept = f"; {config.out} keeps the checkpoint of epoch {epoch}" if epoch else ""
        late = self.first_step + len(self.window) - 1  # the step whose read found it
        read = f"read back at step {late}; " if late != step else ""
        raise DivergedError(f"training diverged: the loss is {value} at epoch {epoch + 1}, step {step} of "
                            f"{self.n_steps} ({read}try a smaller --lr){kept}")
