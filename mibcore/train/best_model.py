"""The model a run's best.pt holds, built from its config and the widths of its own weights (so
it needs none of the training data), and the check that data fits it (eval, predict)."""
import dataclasses
import os
import re

from mibcore.data.checks import modalities_of
from mibcore.errors import CheckpointError, DataError, UsageError
from mibcore.train.build import build_model
from mibcore.train.checkpoint import read_checkpoint
from mibcore.train.config import config_from_dict
from mibcore.train.run_folder import BEST
from mibcore.train.runtime import config_device


def best_path(path):
    """best.pt of a run folder, or the file given."""
    return os.path.join(path, BEST) if os.path.isdir(path) else path


def load_best(path, device=None):
    """(config, model in eval mode on its device, device, best.pt's path) of a run folder or its
    best.pt. `device`: where to run (default: the run's --device). CheckpointError for a file
    that is not a best.pt, or whose weights do not fit its config."""
    path = best_path(path)
    ckpt = read_checkpoint(path)
    if "optimizer" in ckpt:
        raise CheckpointError(f"{path} is the resume checkpoint of a run; evaluate its folder or its {BEST}")
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path}: not a mibcore {BEST} (it holds no config)")
    try:  # (a config that was valid when stored; its seed, say, seeds the evaluation)
        config = config_from_dict(ckpt["config"]).validate()
    except (TypeError, UsageError) as e:
        raise CheckpointError(f"{path}: its stored config is not valid ({e})") from e
    if device:
        config = dataclasses.replace(config, device=device)
    device = config_device(config)
    model = build_model(config, widths=saved_widths(ckpt["model"], path))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not fit its config ({str(e).splitlines()[0]} ...)") from e
    return config, model.to(device).eval(), device, path


def saved_widths(state, path):
    """The widths (build.data_widths' keys) of a model's weights: each modality's projection
    [d, width, 3], in the model's order (the weights' order), and the decoder [outputs, d]."""
    try:
        projections = [(k, v) for k, v in state.items() if re.fullmatch(r"proj\.\w+\.conv\.weight", k)]
        modalities = {k.split(".")[1]: int(v.shape[1]) for k, v in projections}
        if not modalities:
            raise KeyError("proj.<modality>.conv.weight")
        return {"modalities": modalities, "output_dim": int(state["decoder.weight"].shape[0])}
    except (KeyError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{path}: not the weights of a mibcore MIB model (no {e})") from e


def check_data_fits(split, model, config, source, name=lambda key: key):
    """DataError unless a split's (or samples') features are of the model's modalities, with the
    widths it was trained on, naming the modality; its labels, where present, must be of the
    model's task. `name(key)`: the key as the data file names it."""
    c = model.config
    have = modalities_of(split)
    missing = [m for m in model.modalities if m not in have]
    extra = [m for m in have if m not in model.modalities]
    if missing or extra:
        what = (f"has no {', '.join(map(name, missing))}" if missing
                else f"holds {', '.join(map(name, extra))}, not modalities of the model")
        raise DataError(f"{source}: {what}; the model was trained on the modalities {', '.join(model.modalities)}")
    trained = c.modality_dims()
    for m in model.modalities:
        if m == "text" and config.text_backbone:
            continue  # (token ids: any length)
        width = split[m].shape[2]
        if width != trained[m]:
            raise DataError(f"{source}: {name(m)} has {width} features per step, but the model was trained on "
                            f"{trained[m]} {m} features")
    label = split.get("label")
    if label is not None and (1 if label.ndim == 1 else label.shape[1]) != c.output_dim:
        have = "regression labels [N]" if label.ndim == 1 else f"{label.shape[1]} label columns"
        want = "regression (one output)" if c.output_dim == 1 else f"{c.output_dim} classes (multi-label)"
        raise DataError(f"{source}: {name('label')} holds {have}, but the model predicts {want}")
