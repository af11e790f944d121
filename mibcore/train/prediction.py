"""Per-sample predictions of a saved run on any data file (`mibcore predict`).

The data: a split of any dataset file eval reads (.h5, .npz of splits, pickles, synthetic), or
a .npz of one's own samples, without splits and labels optional (mibcore.data.npz: keys text,
audio, visual, and optionally label, id), validated by mibcore.data.checks like any dataset.
Its feature widths must be the run's (DataError naming the modality).

Predictions: regression, the predicted sentiment [N, 1]; multi-label emotion, each class's
probability (the sigmoid of its logit; the metrics' threshold 0 on logits is 0.5 here) [N, C].
Clean mode is deterministic (z = mu, no dropout). Faithful mode samples z, as its evaluation
does, from the generators seeded by the run's seed: the same file, batch size and device give
the same predictions.
"""
import csv
import dataclasses
import io

import torch

from mibcore._io import atomic_write_text
from mibcore.data import npz
from mibcore.data.checks import check_samples
from mibcore.errors import DivergedError, UsageError
from mibcore.train.best_model import check_data_fits, load_best
from mibcore.train.build import load_data
from mibcore.train.evaluation import data_key_name, evaluation_rng, predict


def predict_file(path, data=None, split="test", device=None, batch_size=256):
    """Predictions of a run folder (or its best.pt) on a data file (default: the run's data):
    {"id": [N str], "pred": float32 tensor [N, C] (C = 1 for regression; emotion: probabilities),
    "label": the file's labels as a tensor ([N] or [N, C]), or None where it has none}.
    `split`: which split of a dataset file (ignored for a samples .npz). `device`: default the
    run's. Raises DataError (the file), CheckpointError (the run), UsageError (an option)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch size must be an integer >= 1, got {batch_size!r}")
    config, model, device, _ = load_best(path, device)
    spec = data or config.data
    samples, name = _samples(spec, split, config)
    check_data_fits(samples, model, config, spec, name)
    with evaluation_rng(config, device):
        pred = torch.from_numpy(predict(model, samples, device, config, batch_size))
    bad = int(pred.numel() - torch.isfinite(pred).sum())
    if bad:
        raise DivergedError(f"{bad} of the model's {pred.numel()} predictions are NaN or Inf: its weights have diverged")
    if model.config.output_dim > 1:
        pred = torch.sigmoid(pred)
    label = samples.get("label")
    return {"id": [str(i) for i in samples["id"]], "pred": pred,
            "label": None if label is None else torch.as_tensor(label, dtype=torch.float32)}


def _samples(spec, split, config):
    """(samples, key naming) of a data spec: a samples .npz, or a split of a dataset."""
    if spec.endswith(".npz") and npz.holds_samples(spec):
        return check_samples(npz.load_samples(spec), spec), lambda key: key
    loaded = load_data(dataclasses.replace(config, data=spec))
    return loaded[split], lambda key: data_key_name(spec, split, key)


def predictions_csv(result):
    """predict_file's result as CSV text: id, then `prediction` (regression) or `p_classC` (each
    class's probability), then the label(s) where present (`label`, or `label_classC`)."""
    pred, label = result["pred"], result["label"]
    regression = pred.shape[1] == 1
    header = ["id"] + (["prediction"] if regression else [f"p_class{c}" for c in range(pred.shape[1])])
    if label is not None:
        header += ["label"] if label.ndim == 1 else [f"label_class{c}" for c in range(label.shape[1])]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    labels = [None] * len(result["id"]) if label is None else label.reshape(len(result["id"]), -1).tolist()
    number = "{:.9g}".format  # (9 significant digits: a float32 read back exactly)
    for i, values, y in zip(result["id"], pred.tolist(), labels):
        writer.writerow([i, *map(number, values), *map(number, y or [])])
    return text.getvalue()


def write_predictions(result, out):
    """Writes predictions_csv(result) to `out`, atomically."""
    atomic_write_text(out, predictions_csv(result))
