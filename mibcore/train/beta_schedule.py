"""The KL weight beta over a training run (TrainConfig's beta_schedule and its fields).

  constant   beta at every step (the paper's; the default)
  linear     warm-up: 0 at the first step, rising linearly to beta over `warmup` epochs, then beta
             (warmup 0: beta from the start)
  cyclical   cyclical annealing (Fu et al. 2019, "Cyclical Annealing Schedule"): the run is cut into
             cycles of `cycle` epochs; within each, beta rises linearly from 0 over the first
             `ratio` of the cycle, then holds beta until the cycle ends

The schedule is a function of the training progress t = epoch + step / steps_per_epoch (in
epochs, at the start of each optimizer step), so a resumed run, which restarts at an epoch's
first step, continues it exactly. Its lengths are epochs, not shares of --epochs, so that a run
resumed with a larger --epochs (checkpoint.RESUMABLE) follows the schedule of an uninterrupted
one. t, warmup, cycle and ratio are exact fractions (each float read as the decimal it prints
as), so a cycle's boundary is exactly 0, not a float's 0.99999 of its end.

How the weight reaches the loss: a constant beta stays the Python float the model's loss has
always multiplied by (today's arithmetic, bit for bit); a varying one is a 0-d float32 tensor on
the training device (`weight_tensor`), refilled in place before each step (`fill_`: no host sync,
no new tensor), so a CUDA graph captured once reads each step's value at replay and
torch.compile never sees a changing Python constant.
"""
import math
from fractions import Fraction

import torch

from mibcore.errors import UsageError

SCHEDULES = ("constant", "linear", "cyclical")


def check(config):
    """UsageError naming the first bad schedule field of a TrainConfig (TrainConfig.validate)."""
    if config.beta_schedule not in SCHEDULES:
        raise UsageError(f"beta_schedule must be one of {', '.join(SCHEDULES)}, got {config.beta_schedule!r}")
    for name, ok, rule in (("beta_warmup", lambda v: v >= 0, ">= 0"),
                           ("beta_cycle", lambda v: v > 0, "> 0"),
                           ("beta_ratio", lambda v: 0 < v <= 1, "in (0, 1]")):
        value = getattr(config, name)
        if not (math.isfinite(value) and ok(value)):
            raise UsageError(f"{name} must be a finite number {rule}, got {value!r}")


def _exact(x):
    return Fraction(repr(float(x)))  # the decimal the user wrote (0.3 is 3/10, not its binary neighbour)


class BetaSchedule:
    """schedule.at(epoch, step, steps) -> the KL weight of that optimizer step (epoch and step
    from 0; steps: the epoch's number of steps). See the module docstring."""

    def __init__(self, kind="constant", beta=1e-3, warmup=1.0, cycle=2.0, ratio=0.5):
        self.kind, self.beta = kind, float(beta)
        self.warmup, self.cycle, self.ratio = _exact(warmup), _exact(cycle), _exact(ratio)

    @classmethod
    def of(cls, config):
        """The schedule of a (validated) TrainConfig."""
        return cls(config.beta_schedule, config.beta, config.beta_warmup, config.beta_cycle, config.beta_ratio)

    @property
    def constant(self):
        return self.kind == "constant"

    def fraction(self, epoch, step, steps):
        """The share of beta at that step, in [0, 1] (exact)."""
        if self.kind == "constant":
            return Fraction(1)
        t = Fraction(epoch * steps + step, steps)  # the progress in epochs
        if self.kind == "linear":
            return min(Fraction(1), t / self.warmup) if self.warmup else Fraction(1)
        return min(Fraction(1), (t % self.cycle) / (self.cycle * self.ratio))

    def at(self, epoch, step, steps):
        if self.kind == "constant":
            return self.beta  # (the float itself: 1 * beta is beta, but say so)
        return self.beta * float(self.fraction(epoch, step, steps))

    def weight_tensor(self, device):
        """The device tensor a varying schedule refills before each step (None when constant:
        the loss then multiplies by the config's float, as it always has)."""
        return None if self.constant else torch.zeros((), dtype=torch.float32, device=device)
