"""Checkpoints: best.pt (the best dev epoch's weights and config) and checkpoint.pt (what an exact
resume needs: model, optimizer, early-stopping state, RNG states, config).

Writes are atomic (a temporary file, then a rename), so a killed run leaves the previous file
whole. Reads never unpickle arbitrary classes (torch.load(weights_only=True)), so a foreign
checkpoint cannot run code. Resuming with another config is refused (but for RESUMABLE fields).
"""
import dataclasses
import os

import torch

from mibcore._io import atomic_write
from mibcore.errors import CheckpointError
from mibcore.train.config import TrainConfig
from mibcore.train.run_folder import BEST, CHECKPOINT

# The config fields a resumed run may change: the stopping rules (a resumed run then equals an
# uninterrupted run with the new values, as no schedule depends on them), the progress display,
# how often the loss is read back, the resume flag and the folder's path. Any other difference is refused.
RESUMABLE = ("epochs", "patience", "progress", "quiet", "resume", "out", "loss_every")
RESTART_HINT = "rerun with --restart (or --no-resume) to start the run over"


def _atomic_save(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(config, model, optimizer, state, new_best):
    """Writes best.pt (new_best: the weights of a new best epoch, else None), then checkpoint.pt.

    Each file is written atomically, and best.pt first: an interruption between the two leaves
    the previous checkpoint.pt, and the resumed run redoes that epoch identically."""
    if new_best is not None:
        _atomic_save({"model": new_best, "config": dataclasses.asdict(config)}, os.path.join(config.out, BEST))
    _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                  "config": dataclasses.asdict(config), **rng_states()}, os.path.join(config.out, CHECKPOINT))


def resume(config, model, optimizer):
    """(state, best weights) of config.out's checkpoint, loading the model, the optimizer and the
    torch RNG states (rng_states) in place, so that the remaining epochs run exactly as in an
    uninterrupted run; None when not resuming or there is no checkpoint yet."""
    checkpoint_path = os.path.join(config.out, CHECKPOINT)
    if not (config.resume and os.path.exists(checkpoint_path)):
        return None
    ckpt = read_checkpoint(checkpoint_path, hint=RESTART_HINT)
    _check_same_config(ckpt, config, checkpoint_path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    restore_rng_states(ckpt)
    best_state = read_checkpoint(os.path.join(config.out, BEST), hint=RESTART_HINT)["model"]
    return ckpt["state"], best_state


def read_checkpoint(path, hint=""):
    """The dict in a checkpoint file (on the CPU); CheckpointError when it is missing, empty,
    damaged (a truncated file) or not one of mibcore's."""
    hint = f"; {hint}" if hint else ""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file{hint}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch reports truncation and foreign files in many ways (zip, pickle, EOF)
        reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({type(e).__name__}: {reason}){hint}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a mibcore checkpoint (no model weights){hint}")
    return ckpt


def _check_same_config(ckpt, config, path):
    """Refuses to resume a checkpoint written with another config (but for RESUMABLE fields):
    resuming would keep its optimizer state and weights under a config they did not come from."""
    stored = ckpt.get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: written without its config (an older mibcore), so it cannot be checked "
                              f"to be this run's; {RESTART_HINT}")
    plain = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    defaults = dataclasses.asdict(TrainConfig())  # a field added since the checkpoint had its default
    changes = [f"{name} {stored.get(name, defaults[name])!r} -> {value!r}"
               for name, value in dataclasses.asdict(config).items()
               if name not in RESUMABLE and plain(stored.get(name, defaults[name])) != plain(value)]
    if changes:
        raise CheckpointError(f"{path} was written with another config ({'; '.join(changes)}); only "
                              f"{', '.join(RESUMABLE)} may change when resuming: rerun with the checkpoint's "
                              f"values, or {RESTART_HINT}")


def rng_states():
    """The generator states a checkpoint keeps: the CPU generator's ("rng") and, where CUDA is in
    use (initialized in this process), every CUDA device's ("cuda_rng"), so that a resumed GPU run
    draws the same dropout masks and samples as an uninterrupted one."""
    states = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(ckpt):
    """Restores what rng_states saved. Checkpoints without "cuda_rng" (older ones, CPU runs) restore
    the CPU generator only; CUDA states are restored for the devices present (none without CUDA)."""
    torch.set_rng_state(ckpt["rng"])
    cuda_states = ckpt.get("cuda_rng")
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda_states)[: torch.cuda.device_count()])
