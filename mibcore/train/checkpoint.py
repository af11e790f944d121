"""Checkpoints: best.pt (the best dev epoch's weights and config) and checkpoint.pt (what an exact
resume needs: model, optimizer, early-stopping state, RNG states, config).

Writes are atomic (a temporary file, then a rename), so a killed run leaves the previous file
whole, and ordered (checkpoint.pt, then best.pt: see save_checkpoint) so that any interruption
leaves a folder that resumes exactly. Resuming checks what it loads (check_fits, ...). Reads never unpickle arbitrary classes (torch.load(weights_only=True)), so a foreign
checkpoint cannot run code. Resuming with another config is refused (but for RESUMABLE fields).
"""
import dataclasses
import os

import torch

from mibcore._io import atomic_write
from mibcore.errors import CheckpointError, StorageError, first_line
from mibcore.train.config import TrainConfig
from mibcore.train.run_folder import BEST, CHECKPOINT

# The config fields a resumed run may change: the stopping rules (a resumed run then equals an
# uninterrupted run with the new values, as no schedule depends on them), the progress display,
# how often the loss is read back, the resume flag and the folder's path. Any other difference is refused.
RESUMABLE = ("epochs", "patience", "progress", "quiet", "resume", "out", "loss_every")
RESTART_HINT = "rerun with --restart (or --no-resume) to start the run over"


def _atomic_save(obj, path):
    def write(tmp):
        with open(tmp, "wb") as f:  # through a Python file: a full disk is an OSError (ENOSPC) here
            torch.save(obj, f)

    atomic_write(path, write)


def save_checkpoint(config, model, optimizer, state, new_best, dims):
    """Writes checkpoint.pt, then best.pt (new_best: the weights of a new best epoch, else None);
    dims: the data's widths (build.data_dims), which resume and eval check the data against.

    Each file is written atomically, and checkpoint.pt first, so that best.pt never runs ahead
    of it: an interruption between the two leaves a checkpoint whose own epoch is the best, and
    resume takes the best weights from it (and rewrites best.pt). A StorageError (full disk)
    says what the folder keeps."""
    try:
        _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                      "config": dataclasses.asdict(config), "dims": dims, **rng_states()},
                     os.path.join(config.out, CHECKPOINT))
        if new_best is not None:
            save_best(config, new_best, state["best_epoch"], dims)
    except StorageError as e:
        raise StorageError(f"{e}; {resume_hint(config)}") from e


def save_best(config, weights, epoch, dims):
    """best.pt: the best dev epoch's weights, that epoch, the config and the data's widths."""
    _atomic_save({"model": weights, "epoch": epoch, "config": dataclasses.asdict(config), "dims": dims},
                 os.path.join(config.out, BEST))


def resume_hint(config):
    """What a rerun of an interrupted or failed training does, by what its folder holds."""
    if not os.path.exists(os.path.join(config.out, CHECKPOINT)):
        return f"no epoch was saved in {config.out}: a rerun starts over"
    rerun = "rerun the same command" if config.resume else "rerun without --restart"
    return f"{rerun} to resume from {os.path.join(config.out, CHECKPOINT)}"


def resume(config, model, optimizer, dims, writes=True):
    """(state, best weights) of config.out's checkpoint, loading the model, the optimizer and the
    torch RNG states (rng_states) in place, so that the remaining epochs run exactly as in an
    uninterrupted run; None when not resuming or there is no checkpoint yet. CheckpointError
    (naming the file) for a checkpoint that does not fit this run: its config, the data's
    widths, the model's weights, the optimizer's state, the RNG states, best.pt. writes: whether
    this process writes the run folder (rank 0), and so repairs best.pt (_best_weights)."""
    checkpoint_path = os.path.join(config.out, CHECKPOINT)
    if not (config.resume and os.path.exists(checkpoint_path)):
        return None
    ckpt = read_checkpoint(checkpoint_path, hint=RESTART_HINT)
    _check_same_config(ckpt, config, checkpoint_path)
    check_fits(ckpt, model, dims, checkpoint_path, config.data, hint=RESTART_HINT)
    state = _checked_state(ckpt, checkpoint_path)
    model.load_state_dict(ckpt["model"])
    _load_optimizer(optimizer, ckpt, checkpoint_path)
    try:
        restore_rng_states(ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{checkpoint_path}: its RNG state is missing or damaged ({type(e).__name__}: "
                              f"{first_line(e)}); {RESTART_HINT}") from e
    return state, _best_weights(config, ckpt, state, model, dims, writes)


def _best_weights(config, ckpt, state, model, dims, writes):
    """The best epoch's weights for a resumed run: the checkpoint's own where its epoch is the
    best (best.pt, which may be stale or missing after an interruption, is rewritten from them),
    else best.pt's, which must hold that epoch."""
    best_epoch = state.get("best_epoch")  # (older checkpoints lack it: best.pt then)
    if best_epoch is not None and best_epoch == state["epoch"]:
        if writes:
            save_best(config, ckpt["model"], best_epoch, dims)
        return ckpt["model"]
    path = os.path.join(config.out, BEST)
    if best_epoch is None and state["epoch"] > 0 and not os.path.exists(path):
        return None  # no epoch had a finite dev score: there is no best.pt
    best = read_checkpoint(path, hint=RESTART_HINT)
    if best_epoch is not None and best.get("epoch", best_epoch) != best_epoch:  # (older best.pt: no epoch)
        raise CheckpointError(f"{path} holds epoch {best.get('epoch')!r}, but {CHECKPOINT} records epoch "
                              f"{best_epoch} as the best; {RESTART_HINT}")
    check_fits(best, model, dims, path, config.data, hint=RESTART_HINT)
    return best["model"]


def check_fits(ckpt, model, dims, path, data, hint=""):
    """CheckpointError naming the file where the checkpoint does not fit `model` built for the
    data `data`: the data's widths (dims) against those it was trained on, then its weights'
    names and shapes (another variant's weights, say)."""
    hint = f"; {hint}" if hint else ""
    stored = ckpt.get("dims")
    for key, width in (stored.items() if isinstance(stored, dict) else ()):
        if key in dims and dims[key] != width:
            what = "labels are" if key == "label" else f"{key} features are"
            raise CheckpointError(f"data {data!r}: its {what} {dims[key]} wide, but {path} was trained on {width} "
                                  f"(the data changed since?): use that run's data{hint}")
    weights, expected = ckpt["model"], model.state_dict()
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: its model weights are not a state dict{hint}")
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in weights and (not isinstance(weights[k], torch.Tensor) or weights[k].shape != v.shape)]
    if missing or unexpected or reshaped:
        found = [f"{len(v)} {name} ({', '.join(v[:2])}{', ...' if len(v) > 2 else ''})"
                 for name, v in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
                 if v]
        raise CheckpointError(f"{path}: its weights are not those of this model (another variant or data?): "
                              f"{'; '.join(found)}{hint}")


def _checked_state(ckpt, path):
    """The checkpoint's early-stopping state, checked to be one that training wrote."""
    state = ckpt.get("state")
    ints = ("epoch", "bad_epochs")
    if not (isinstance(state, dict) and all(isinstance(state.get(k), int) and state[k] >= 0 for k in ints)
            and isinstance(state.get("history"), list) and len(state["history"]) == state["epoch"]
            and isinstance(state.get("best_score"), float)):
        raise CheckpointError(f"{path}: its training state is missing or damaged; {RESTART_HINT}")
    return state


def _load_optimizer(optimizer, ckpt, path):
    """Loads the optimizer's state, refusing one that is not of this model's parameters."""
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: its optimizer state does not fit this model ({type(e).__name__}: "
                              f"{first_line(e)}); {RESTART_HINT}") from e
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != p.shape:
                    raise CheckpointError(f"{path}: its optimizer state does not fit this model ({name} "
                                          f"{tuple(value.shape)} for a parameter {tuple(p.shape)}); {RESTART_HINT}")


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
        reason = first_line(e).split(". ")[0]
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
