"""Evaluation: predictions and metrics of a split, the evaluation of a saved run (its features
perturbed on request: mibcore.train.perturb), and the one dev-score rule by which the best
epoch is selected (training, curves, epoch lines)."""
import contextlib
import dataclasses
import math

import numpy as np
import torch

from mibcore.data import MultimodalDataset
from mibcore.errors import DataError, DivergedError
from mibcore.train.best_model import check_data_fits, load_best
from mibcore.train.build import load_data
from mibcore.train.metrics import emotion_metrics, regression_metrics
from mibcore.train.perturb import check_options, feature_stats, perturb
from mibcore.train.runtime import autocast


def dev_metric(dev):
    """(key, label) of the dev metric that selects the best epoch: MAE for regression, mean F1
    for emotion (told apart by the metrics the labels gave)."""
    return ("mae", "dev MAE") if "mae" in dev else ("mean_f1", "dev mean F1")


def dev_score(dev):
    """dev_metric as a score where lower is better: MAE, or 1 - mean F1."""
    key, _ = dev_metric(dev)
    return dev[key] if key == "mae" else 1.0 - dev[key]


def best_epoch(history):
    """The best dev epoch of a history, as training selects it (the earliest on a tie; None if all NaN)."""
    best, best_score = None, math.inf
    for h in history:
        if dev_score(h["dev"]) < best_score:
            best, best_score = h["epoch"], dev_score(h["dev"])
    return best


MOSI_SCALE = 3.0  # the regression metrics assume sentiment in [-3, 3], 0 neutral (CMU-MOSI, MOSEI)
BINARY_HINT = ("for a binary task store one-hot labels [N, 2] (BCE, per-class accuracy and F1), or map "
               "them to -1/+1 for regression (every sample then counts in Acc-2 and F1)")


def label_fit(data, source="data"):
    """Checks that the labels fit the metrics of their task (after mibcore.data.checks). Raises
    DataError where every number would be meaningless: regression labels that are all 0 or 1
    (binary labels read as sentiment: the metrics drop the 0s as neutral, so Acc-2 and F1 see
    the 1s alone and Corr is NaN). Returns warnings (strings) where the data is valid but a
    metric is undefined or clipped: a split's labels constant (Corr NaN: too few distinct
    non-zero labels), labels outside [-3, 3] (Acc-7 and Acc-5 clip to it), a label column
    constant in training (multi-label)."""
    splits = {name: np.asarray(data[name]["label"]) for name in ("train", "dev", "test")}
    notes = []
    if splits["train"].ndim == 2:
        constant = [c for c in range(splits["train"].shape[1]) if np.ptp(splits["train"][:, c]) == 0]
        if constant:
            notes.append(f"{source}: train/label columns {constant} are constant: those classes have nothing to "
                         "learn and their F1 is 0 or trivial")
        return notes
    values = np.concatenate(list(splits.values()))
    if np.all((values == 0) | (values == 1)):
        raise DataError(
            f"{source}: every regression label is 0 or 1: binary labels, but the regression metrics assume "
            f"sentiment on CMU-MOSI's [-3, 3] scale, where 0 is neutral and left out of MAE, Corr, Acc-2 and F1; "
            + BINARY_HINT)
    for name, label in splits.items():
        if len(np.unique(label[label != 0])) < 2:
            notes.append(f"{source}: {name}/label has fewer than 2 distinct non-zero values: its Corr is NaN"
                         + (" and training has nothing to learn" if name == "train" and np.ptp(label) == 0 else ""))
    if np.abs(values).max() > MOSI_SCALE:
        notes.append(f"{source}: regression labels reach {np.abs(values).max():g}, outside CMU-MOSI's [-3, 3]: "
                     "Acc-7 and Acc-5 clip predictions and labels to [-3, 3] and [-2, 2] (MAE and Corr do not)")
    return notes


def train_label_mean(data):
    """The predict-the-mean baseline of regression metrics (None for emotion labels)."""
    label = data["train"]["label"]
    return float(np.mean(label)) if label.ndim == 1 else None


@torch.no_grad()
def predict(model, split, device, config, batch_size=256):
    model.eval()
    ds = MultimodalDataset(split, token_ids=bool(config.text_backbone), modalities=model.modalities)
    preds = []
    for start in range(0, len(ds), batch_size):
        inputs = [t.to(device) for t in ds[start : start + batch_size][:-1]]  # (the last: the label)
        with autocast(config, device):
            preds.append(model(*inputs)["pred"].float().cpu())
    return torch.cat(preds).numpy() if preds else np.zeros((0, 1), np.float32)


@contextlib.contextmanager
def evaluation_rng(config, device):
    """Faithful mode samples z at evaluation. Its draws come from the default generators seeded
    by the run's seed inside a fork of the RNG state: evaluating the same weights always gives
    the same numbers (so `eval` reproduces metrics.json exactly), and the training's RNG stream
    is left as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        yield


def evaluate(model, split, device, config, train_label_mean):
    with evaluation_rng(config, device):
        pred = predict(model, split, device, config)
    bad = int(pred.size - np.count_nonzero(np.isfinite(pred)))
    if bad:
        raise DivergedError(f"{bad} of the model's {pred.size} predictions are NaN or Inf: its weights have diverged")
    if split["label"].ndim == 1:
        return regression_metrics(pred[:, 0], split["label"], train_label_mean)
    return emotion_metrics(pred, split["label"])


def load_run(path, data_spec=None, device=None):
    """(config, model, device, data) to evaluate a run folder or its best.pt on a dataset (default:
    the run's), checked to fit the model (mibcore.train.best_model.check_data_fits)."""
    config, model, device, path = load_best(path, device)
    config = dataclasses.replace(config, data=data_spec or config.data)
    data = load_data(config)
    label_fit(data, config.data)  # (its errors only: eval prints nothing but the metrics)
    check_data_fits(data["train"], model, config, config.data, name=lambda key: data_key_name(config.data, "train", key))
    return config, model, device, data


def evaluate_checkpoint(path, data_spec=None, split="test", device=None, drop=(), drop_mode="zero", noise=None,
                        seed=None):
    """Evaluates best.pt (or a run folder) on a split; returns the metrics. `device`: where to
    evaluate (default: the run's device setting). `drop` (modalities missing: drop_mode "zero"
    or "mean", the training split's) and `noise` ({modality: sigma}) perturb the split's
    features first (mibcore.train.perturb; `seed`: its noise, default the run's seed)."""
    config, model, device, data = load_run(path, data_spec, device)
    check_options(drop, drop_mode, noise, token_text=bool(config.text_backbone), modalities=model.modalities)
    part = data[split]
    if drop or noise:
        seed = config.seed if seed is None else seed
        part = perturb(part, feature_stats(data["train"]), drop, drop_mode, noise, seed)
    return evaluate(model, part, device, config, train_label_mean(data))


def data_key_name(spec, split, key):
    """How a data file names a split's key in messages: S_key in a .npz, S/key elsewhere."""
    return f"{split}_{key}" if spec.endswith(".npz") else f"{split}/{key}"
